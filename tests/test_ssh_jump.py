"""The ssh target behind a bastion, and ``~/.ssh/config`` aliases, against real OpenSSH.

Three private sshd serve the module: the ``target`` in a network namespace
(``sshd.Island``: 10.250.77.2:22, which this process cannot reach at all, only the
test user's processes, such as a bastion's sessions, can), a ``bastion`` on
127.0.0.5 (logging at DEBUG, so the tunnel it opens shows in its log) and a
``closed`` bastion on 127.0.0.6 that refuses TCP forwarding.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_ssh import _isolated_home, cli, keys, one_line_error  # noqa: F401 - fixtures

from jupyter_compute import api
from jupyter_compute.exceptions import TargetError
from jupyter_compute.targets.ssh import HostKeyError, sshconfig
from jupyter_compute.targets.ssh.connection import connection

import sshd
from conftest import Project

HELLO = "import socket\nprint('hello from', socket.gethostname(), flush=True)\n"


@dataclass
class Hosts:
    """The servers of this module and what a test needs to attach them."""

    target: sshd.SSHServer
    bastion: sshd.SSHServer
    closed: sshd.SSHServer
    key: Path
    workdir: str

    def jump(self, server: sshd.SSHServer | None = None) -> str:
        server = server or self.bastion
        return f"{sshd.USER}@{server.address}:{server.port}"

    def options(self, **extra: object) -> dict[str, object]:
        opts: dict[str, object] = {
            "host": self.target.address, "port": self.target.port, "user": sshd.USER,
            "key": str(self.key), "workdir": self.workdir, "connect_timeout": 5,
            "proxy_jump": self.jump(), "trust_host_key": self.target.fingerprint,
            "trust_jump_host_key": self.bastion.fingerprint}
        opts.update(extra)
        return {k: v for k, v in opts.items() if v is not None}

    def flags(self, **extra: object) -> list[str]:
        return sshd.as_flags(self.options(**extra))


@pytest.fixture(scope="module")
def hosts(keys: dict[str, Path]) -> Iterator[Hosts]:  # noqa: F811 - the imported fixture
    root = keys["root"]
    with sshd.Island() as island, \
            sshd.SSHServer(root / "island", island.address, netns=island.name) as target, \
            sshd.SSHServer(root / "bastion", "127.0.0.5", log_level="DEBUG1") as bastion, \
            sshd.SSHServer(root / "closed", "127.0.0.6",
                           extra=("AllowTcpForwarding no",)) as closed:
        for server in (target, bastion, closed):
            server.authorize(sshd.USER, keys["good"])
            server.start()
        workdir = f"jc-jump-{os.getpid()}"
        yield Hosts(target, bastion, closed, keys["good"], f"~/{workdir}")
        shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)


def test_a_run_goes_through_the_bastion_to_a_host_out_of_reach(
        project: Project, hosts: Hosts) -> None:
    with pytest.raises(OSError) as direct, \
            socket.create_connection((hosts.target.address, hosts.target.port), timeout=3):
        pass
    assert direct.value.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)

    out = cli(project, "attach", "lab", "--type", "ssh", *hosts.flags())
    assert out.returncode == 0, out.stderr
    known = (project.root / ".jupyter_compute" / "known_hosts").read_text()
    assert f"[127.0.0.5]:{hosts.bastion.port} ssh-ed25519 " in known
    assert f"{hosts.target.address} ssh-ed25519 " in known  # port 22: no brackets

    project.write("hello.py", HELLO)
    out = cli(project, "submit", "hello.py", "--target", "lab", "--wait")
    assert out.returncode == 0, out.stderr
    assert "hello from" in out.stdout and "Completed" in out.stdout
    log = hosts.bastion.log()
    tunnel = rf"direct_tcpip: .*target {re.escape(hosts.target.address)} port 22\b"
    assert re.search(tunnel, log), log


def test_the_pooled_connection_reconnects_through_a_restarted_bastion(
        project: Project, hosts: Hosts) -> None:
    target = api.attach("lab", "ssh", **hosts.options())
    project.write("hello.py", HELLO)
    assert api.submit("hello.py", target="lab").wait(timeout=60).value == "Completed"
    conn = target.host.conn  # type: ignore[attr-defined]
    assert conn.endpoint.jump is not None and len(conn.jumps) == 1
    connects = conn.connects
    hosts.bastion.restart()  # drops the tunnel, and so the target's session in it
    run = None
    for _ in range(3):  # the first call after the drop may be the one that notices it
        try:
            run = api.submit("hello.py", target="lab")
            break
        except TargetError:
            continue
    assert run is not None and run.wait(timeout=60).value == "Completed"
    assert conn.connects > connects and conn.connected
    # the jump is part of the pooled endpoint: the same host through another bastion
    # is another connection
    other = sshconfig.resolve({**hosts.options(), "proxy_jump": hosts.jump(hosts.closed)},
                              known_hosts=conn.endpoint.known_hosts, timeout=5)
    assert other != conn.endpoint
    assert connection(other, conn.python, conn.workdir) is not conn


def test_a_chain_of_jump_hosts(project: Project, hosts: Hosts) -> None:
    # through the bastion to itself (127.0.0.5 is reachable from there), then on
    chain = f"{hosts.jump()},{hosts.jump()}"
    target = api.attach("lab", "ssh", **hosts.options(proxy_jump=chain))
    project.write("hello.py", HELLO)
    assert api.submit("hello.py", target="lab").wait(timeout=60).value == "Completed"
    conn = target.host.conn  # type: ignore[attr-defined]
    assert len(conn.jumps) == 2
    assert f"target 127.0.0.5 port {hosts.bastion.port}" in hosts.bastion.log()


def test_unknown_host_keys_are_refused_on_either_hop(project: Project, hosts: Hosts) -> None:
    with pytest.raises(HostKeyError, match="refusing"):  # another key than the bastion's
        api.attach("lab", "ssh", **hosts.options(trust_jump_host_key="SHA256:" + "A" * 43))
    line = one_line_error(cli(project, "attach", "lab", "--type", "ssh",
                              *hosts.flags(trust_jump_host_key=None)))
    assert "unknown host key for jump host" in line and hosts.bastion.fingerprint in line
    assert f"--trust-jump-host-key {hosts.bastion.fingerprint}" in line

    line = one_line_error(cli(project, "attach", "lab", "--type", "ssh",
                              *hosts.flags(trust_host_key=None)))
    assert "unknown host key for host 10.250.77.2" in line and hosts.target.fingerprint in line
    assert f"--trust-host-key {hosts.target.fingerprint}" in line
    # the bastion's key, trusted by the user, is known now; the target's is not
    known = (project.root / ".jupyter_compute" / "known_hosts").read_text()
    assert "127.0.0.5" in known and hosts.target.address not in known
    assert not (project.root / ".jupyter_compute" / "targets.yml").exists()


def test_a_changed_bastion_key_is_refused_loudly(project: Project, hosts: Hosts,
                                                 keys: dict[str, Path]) -> None:  # noqa: F811
    # the workspace records another key for the bastion than the one it offers
    other = keys["other"].with_suffix(".pub").read_text().split()
    known = project.root / ".jupyter_compute" / "known_hosts"
    known.write_text(f"[127.0.0.5]:{hosts.bastion.port} {other[0]} {other[1]}\n")
    line = one_line_error(cli(project, "attach", "lab", "--type", "ssh", *hosts.flags()))
    assert "HOST KEY CHANGED for [127.0.0.5]:" in line and hosts.bastion.fingerprint in line
    assert f"--trust-jump-host-key {hosts.bastion.fingerprint}" in line, line

    assert not (project.root / ".jupyter_compute" / "targets.yml").exists()


def write_config(path: Path, hosts: Hosts, user: str = sshd.USER) -> Path:
    path.write_text(f"""\
Host lab
    HostName {hosts.target.address}
    User {user}
    Port {hosts.target.port}
    IdentityFile {hosts.key}
    ProxyJump gate

Host gate
    HostName {hosts.bastion.address}
    Port {hosts.bastion.port}
    User {sshd.USER}
""")
    return path


def test_an_alias_from_an_ssh_config_file(project: Project, hosts: Hosts,
                                          tmp_path: Path) -> None:
    config = write_config(tmp_path / "ssh_config", hosts)
    out = cli(project, "attach", "lab", "--type", "ssh", "--host", "lab", "--ssh-config",
              str(config), "--workdir", hosts.workdir,
              "--trust-host-key", hosts.target.fingerprint,
              "--trust-jump-host-key", hosts.bastion.fingerprint)
    assert out.returncode == 0, out.stderr
    project.write("hello.py", HELLO)
    out = cli(project, "submit", "hello.py", "--target", "lab", "--wait")
    assert out.returncode == 0, out.stderr
    assert "hello from" in out.stdout

    # options given to attach win over the config; ~/.ssh/config is the default
    home = Path(os.environ["HOME"])
    (home / ".ssh").mkdir()
    write_config(home / ".ssh" / "config", hosts, user="nosuchuser")
    ep = sshconfig.resolve({"host": "lab", "user": sshd.USER, "port": 2222}, "", 5)
    assert (ep.host, ep.port, ep.user, ep.key) == (hosts.target.address, 2222, sshd.USER,
                                                   str(hosts.key))
    assert ep.jump is not None and ep.jump.label == f"{sshd.USER}@[127.0.0.5]:" \
                                                   f"{hosts.bastion.port}"
    assert ep.ssh_config == str(home / ".ssh" / "config")
    with pytest.raises(TargetError, match="authentication as nosuchuser@"):
        api.attach("lab2", "ssh", host="lab", workdir=hosts.workdir,
                   trust_host_key=hosts.target.fingerprint,
                   trust_jump_host_key=hosts.bastion.fingerprint)


def test_a_proxy_command_from_an_ssh_config_file(project: Project, hosts: Hosts,
                                                 tmp_path: Path) -> None:
    """``ProxyCommand ssh -W %h:%p gate``: SSH goes over the command's stdin and stdout
    (OpenSSH's client through the bastion here); the target's key is still checked by
    us. A command that fails is one line naming the config's line."""
    bastion = (f"ssh -i {hosts.key} -p {hosts.bastion.port} -o BatchMode=yes "
               "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
               f"-o LogLevel=ERROR -W %h:%p {sshd.USER}@{hosts.bastion.address}")
    config = tmp_path / "ssh_config"
    config.write_text(f"""\
Host plab
    HostName {hosts.target.address}
    User {sshd.USER}
    IdentityFile {hosts.key}
    ProxyCommand {bastion}

Host broken
    HostName {hosts.target.address}
    ProxyCommand sh -c 'exit 3'
""")
    out = cli(project, "attach", "lab", "--type", "ssh", "--host", "plab", "--ssh-config",
              str(config), "--workdir", hosts.workdir)
    assert out.returncode != 0 and hosts.target.fingerprint in out.stderr, out.stderr
    out = cli(project, "attach", "lab", "--type", "ssh", "--host", "plab", "--ssh-config",
              str(config), "--workdir", hosts.workdir,
              "--trust-host-key", hosts.target.fingerprint)
    assert out.returncode == 0, out.stderr
    project.write("hello.py", HELLO)
    out = cli(project, "submit", "hello.py", "--target", "lab", "--wait")
    assert out.returncode == 0, out.stderr
    assert "hello from" in out.stdout and "Completed" in out.stdout

    line = one_line_error(cli(project, "attach", "x", "--type", "ssh", "--host", "broken",
                              "--ssh-config", str(config)))
    assert "ProxyCommand of Host broken" in line and str(config) in line, line


def test_bad_input_is_one_line_saying_what_to_fix(project: Project, hosts: Hosts,
                                                  tmp_path: Path) -> None:
    config = write_config(tmp_path / "ssh_config", hosts)
    line = one_line_error(cli(project, "attach", "x", "--type", "ssh", "--host", "nolab",
                              "--ssh-config", str(config)))
    assert f"no Host nolab in {config}" in line and "--host" in line, line

    down = f"{sshd.USER}@127.0.0.5:{sshd.free_port('127.0.0.5')}"
    line = one_line_error(cli(project, "attach", "x", "--type", "ssh",
                              *hosts.flags(proxy_jump=down)))
    assert "jump host 127.0.0.5" in line and "refused" in line and "--proxy-jump" in line, line

    line = one_line_error(cli(project, "attach", "x", "--type", "ssh",
                              *hosts.flags(proxy_jump=hosts.jump(hosts.closed),
                                           trust_jump_host_key=hosts.closed.fingerprint)))
    assert "refuses to forward" in line and "AllowTcpForwarding" in line, line

    out = cli(project, "attach", "x", "--type", "ssh", *hosts.flags(proxy_jump="me@:22"))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "bad jump host 'me@:22'" in out.stderr and "--proxy-jump" in out.stderr
    assert not (project.root / ".jupyter_compute" / "targets.yml").exists()
