"""Private OpenSSH servers on loopback, for the ssh target's tests and benchmarks.

Each ``SSHServer`` is a real ``/usr/sbin/sshd -D`` with its own config, host key,
port and authorized keys, all in one folder, listening on a loopback address of
its own (127.0.0.2, 127.0.0.3, …)::

    ensure_user(USER)
    with SSHServer(tmp / "a", "127.0.0.2") as server:
        server.authorize(USER, make_key(tmp / "id_ed25519"))
        server.start()
        ...                       # connect to server.address:server.port as USER
        server.restart()          # drops every client connection (runs survive)
        server.rekey()            # a new host key, as if the host were reinstalled

A host behind a bastion: ``Island`` is a network namespace joined to this one by
a veth pair, which only the test user's processes (a bastion's sessions) may reach;
an ``SSHServer(..., netns=island.name)`` serves there::

    with Island() as island, SSHServer(tmp / "t", island.address, netns=island.name) as t:
        t.start()                 # 10.250.77.2:22: refused to root, reachable by jctest

Needs root (sshd, useradd, ip) and ``scripts/install-test-deps.sh`` (openssh-server).
Everything is idempotent: users that exist are reused, keys that exist are kept, an
island left over from an earlier run is removed first.
Only processes this module started are ended, by their pids.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
#: The test users: one logs in with keys only, one with a password.
USER = "jctest"
PASSWORD_USER = "jcpass"


def unavailable() -> str | None:
    """Why sshd-based tests cannot run here, or None when they can."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing: run scripts/install-test-deps.sh"
    if os.geteuid() != 0:
        return "starting sshd and creating test users needs root"
    if not shutil.which("ssh-keygen"):
        return "ssh-keygen is missing: run scripts/install-test-deps.sh"
    return None


def ensure_user(name: str, password: str | None = None) -> Path:
    """Create ``name`` (with a home) unless it exists; unlock it; return its home.

    Without a password the account gets ``*``: no password login, but sshd no longer
    calls it locked (``useradd`` leaves ``!``), so keys work.
    """
    if subprocess.run(["id", "-u", name], capture_output=True).returncode != 0:
        made = subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], capture_output=True,
                              text=True)
        if made.returncode not in (0, 9):  # 9: created meanwhile by another process
            raise RuntimeError(f"useradd {name} failed: {made.stderr.strip()}")
    if password is None:
        subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)
    else:  # chpasswd ships with useradd (the passwd package): no openssl needed
        subprocess.run(["chpasswd"], input=f"{name}:{password}\n", text=True, check=True,
                       capture_output=True)
    return Path(os.path.expanduser(f"~{name}"))


def make_key(path: Path, passphrase: str = "") -> Path:
    """An ed25519 key pair at ``path`` (and ``path.pub``), made once."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "jctest",
                        "-f", str(path)], check=True)
    return path


def fingerprint(public_key: Path) -> str:
    """``SHA256:…`` of a public key file, as ``ssh-keygen -l`` prints it."""
    out = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(public_key)],
                         capture_output=True, text=True, check=True).stdout
    return out.split()[1]


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


class SSHServer:
    """One private sshd; see the module docstring."""

    def __init__(self, root: Path, address: str = "127.0.0.2",
                 users: tuple[str, ...] = (USER,), password_auth: bool = False,
                 netns: str | None = None, extra: tuple[str, ...] = (),
                 log_level: str = "ERROR") -> None:
        self.root = root
        self.address = address
        self.users = users
        self.password_auth = password_auth
        #: serve inside this network namespace (its own ports: 22 is free there)
        self.netns = netns
        self.extra = extra              # more sshd_config lines
        self.log_level = log_level
        self.port = 22 if netns else free_port(address)
        self.proc: subprocess.Popen[bytes] | None = None
        (root / "authorized").mkdir(parents=True, exist_ok=True)
        self.host_key = root / "host_ed25519"
        make_key(self.host_key)

    @property
    def fingerprint(self) -> str:
        """The host key's fingerprint, the one a client must trust."""
        return fingerprint(self.host_key.with_suffix(".pub"))

    def authorize(self, user: str, key: Path) -> None:
        """Let ``user`` log in with the private ``key`` (its ``.pub`` is read)."""
        path = self.root / "authorized" / user
        line = Path(f"{key}.pub").read_text()
        text = path.read_text() if path.exists() else ""
        if line not in text:
            path.write_text(text + line)
        path.chmod(0o644)

    def _config(self) -> Path:
        cfg = self.root / "sshd_config"
        cfg.write_text("\n".join([
            f"ListenAddress {self.address}",
            f"Port {self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.root / 'authorized'}/%u",
            "StrictModes no",  # the keys live in a temporary folder
            "UsePAM no",
            f"PasswordAuthentication {'yes' if self.password_auth else 'no'}",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "PermitRootLogin no",
            f"AllowUsers {' '.join(self.users)}",
            "UseDNS no",
            "MaxStartups 100",
            "MaxSessions 50",
            "Subsystem sftp internal-sftp",
            f"LogLevel {self.log_level}",
            *self.extra,
        ]) + "\n")
        return cfg

    def start(self) -> None:
        """Start sshd and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege-separation folder
        command = [SSHD, "-D", "-e", "-f", str(self._config())]
        if self.netns:  # ip execs sshd: the pid is sshd's
            command = ["ip", "netns", "exec", self.netns, *command]
        with open(self.root / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log)
        if self.netns:
            self._wait_in_netns()
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: "
                                   f"{(self.root / 'sshd.log').read_text()[-500:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5) as s:
                    s.recv(4)  # the banner: sshd is serving, not just bound
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"sshd on {self.address}:{self.port} did not start")

    def _wait_in_netns(self) -> None:
        """Wait for the banner from inside the namespace (this one cannot reach it)."""
        wait = (f"import socket, time\nend = time.monotonic() + 10\n"
                f"while time.monotonic() < end:\n"
                f"    try:\n"
                f"        socket.create_connection(({self.address!r}, {self.port}), 0.5)"
                f".recv(4)\n        break\n"
                f"    except OSError:\n        time.sleep(0.02)\n"
                f"else:\n    raise SystemExit(1)\n")
        assert self.netns and self.proc
        done = subprocess.run(["ip", "netns", "exec", self.netns, "python3", "-c", wait],
                              capture_output=True)
        if done.returncode != 0 or self.proc.poll() is not None:
            raise RuntimeError(f"sshd in {self.netns} on {self.address}:{self.port} did not "
                               f"start: {(self.root / 'sshd.log').read_text()[-500:]}")

    def log(self) -> str:
        """What sshd logged (``log_level`` decides how much)."""
        path = self.root / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop sshd and every connection it serves (as a host going down would)."""
        if self.proc is None:
            return
        sessions = _descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.terminate()
        for pid in sessions:
            _kill(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in sessions:
            _kill(pid, signal.SIGKILL)
        self.proc = None

    def restart(self) -> None:
        """Stop and start again on the same address, port and host key."""
        self.stop()
        self.start()

    def rekey(self) -> None:
        """Give the server a new host key and restart it."""
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        make_key(self.host_key)
        self.restart()

    def session_pids(self) -> list[int]:
        """The pids serving client connections right now."""
        return _descendants(self.proc.pid) if self.proc is not None else []

    def __enter__(self) -> SSHServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Island:
    """A network namespace joined to this one by a veth pair, which only ``user``'s
    processes may reach (a policy-routing rule for that uid; everyone else, root
    included, gets "no route to host"). Nothing leaves the machine: the subnet is
    marked unreachable in the main table, so it never falls to the default route.

    Setting up first removes whatever an earlier run left; ``close`` is idempotent.
    """

    name = "jc-island"
    veth = "jcisland0"              # this side
    peer = "jcisland1"              # the namespace side
    subnet = "10.250.77.0/30"
    here = "10.250.77.1"
    address = "10.250.77.2"         # where the namespace's servers listen
    table = "25077"
    pref = "32000"                  # before the main table (32766)

    def __init__(self, user: str = USER) -> None:
        import pwd

        self.uid = pwd.getpwnam(user).pw_uid

    def __enter__(self) -> Island:
        self.close()
        inside = ["ip", "netns", "exec", self.name]
        for command in (
                ["ip", "netns", "add", self.name],
                ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", self.peer],
                ["ip", "link", "set", self.peer, "netns", self.name],
                ["ip", "addr", "add", f"{self.here}/30", "dev", self.veth, "noprefixroute"],
                ["ip", "link", "set", self.veth, "up"],
                [*inside, "ip", "addr", "add", f"{self.address}/30", "dev", self.peer],
                [*inside, "ip", "link", "set", self.peer, "up"],
                [*inside, "ip", "link", "set", "lo", "up"],
                ["ip", "route", "add", self.subnet, "dev", self.veth, "table", self.table],
                ["ip", "route", "add", "unreachable", self.subnet],
                ["ip", "rule", "add", "pref", self.pref, "uidrange", f"{self.uid}-{self.uid}",
                 "to", self.subnet, "lookup", self.table]):
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                self.close()
                raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()}")
        return self

    def close(self) -> None:
        """Remove the rule, routes, veth pair and namespace (whichever exist)."""
        for command in (["ip", "rule", "del", "pref", self.pref, "to", self.subnet],
                        ["ip", "route", "del", "unreachable", self.subnet],
                        ["ip", "route", "flush", "table", self.table],
                        ["ip", "link", "del", self.veth],
                        ["ip", "netns", "del", self.name]):
            subprocess.run(command, capture_output=True)

    def __exit__(self, *exc: object) -> None:
        self.close()


def user_processes(user: str) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the live processes of ``user`` (zombies excluded)."""
    import pwd

    uid = pwd.getpwnam(user).pw_uid
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            with open(f"/proc/{entry}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue
        found.append((int(entry), cmd))
    return found


def processes_of_run(user: str, run_id: str) -> list[tuple[int, str]]:
    """Processes of ``user`` that belong to run ``run_id``: the agent (its command
    line names the run folder) and the script and its children (their environment
    carries the run id)."""
    marker = f"JUPYTER_COMPUTE_RUN_ID={run_id}\0".encode()
    found = []
    for pid, cmd in user_processes(user):
        if run_id in cmd:
            found.append((pid, cmd))
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read():
                    found.append((pid, cmd))
        except OSError:
            continue
    return found


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@dataclass
class Login:
    """A running sshd, a key authorized for ``USER`` and a remote workdir: what a test
    needs to attach an ssh target to it (``options`` for the API, ``flags`` for the CLI)."""

    sshd: SSHServer
    key: Path            # authorized for USER
    workdir: str         # the session's remote workdir (under the user's home)

    @property
    def port(self) -> int:
        return self.sshd.port

    def options(self, **extra: object) -> dict[str, object]:
        opts: dict[str, object] = {
            "host": self.sshd.address, "port": self.port, "user": USER,
            "key": str(self.key), "workdir": self.workdir, "connect_timeout": 5,
            "trust_host_key": self.sshd.fingerprint}
        opts.update(extra)
        return {k: v for k, v in opts.items() if v is not None}

    def flags(self, **extra: object) -> list[str]:
        return as_flags(self.options(**extra))


def as_flags(options: dict[str, object]) -> list[str]:
    """``{"proxy_jump": "a"}`` → ``["--proxy-jump", "a"]``: attach options as CLI flags."""
    return [a for k, v in options.items() for a in (f"--{k.replace('_', '-')}", str(v))]
