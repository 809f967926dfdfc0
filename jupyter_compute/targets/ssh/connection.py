"""One SSH connection per target: authenticated once, kept alive, reconnected with backoff.

A ``Connection`` holds a paramiko client, shared by every submit and read of the
target in this process (``connection()`` pools them); everything goes over exec
channels: a few whole commands and streams, and the helper session (``session``),
so the host needs no SFTP::

    conn = connection(Endpoint("10.0.0.5", 22, "me", key="~/.ssh/id_ed25519"),
                      python="python3", workdir="~/.jupyter_compute")
    conn.ensure()                                # connect, check host key and Python
    conn.inspect(digests, run_dir, runtime_dir)  # which blobs the host lacks
    conn.run("uname -a")                         # (exit code, stdout, stderr)

When the connection drops, the failing call raises ``HostUnreachableError`` and the
next call reconnects, waiting longer between failed attempts (0.25 s doubling to
5 s), so a poll loop neither hammers a host that is down nor gives up on one that
comes back. Failures name their cause (DNS, refused, timeout, host key,
authentication, no Python) in one line. Secrets are read from environment
variables or a terminal prompt and kept in memory only.

An endpoint with a ``jump`` (a bastion; ``sshconfig.py`` builds it from
``--proxy-jump`` or ``ProxyJump``) is reached through it: the connection logs in
to the jump host (its host key checked like the target's), opens a
``direct-tcpip`` channel to the target and runs the target's SSH session over
that channel. A chain of jump hosts nests the same way. The jump connections
belong to the target's connection: they are closed, and reopened, with it.
An endpoint with a ``proxy_command`` (``ProxyCommand`` in the ssh config) talks SSH
over that command's stdin and stdout instead (paramiko's ``ProxyCommand``).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import errno
import getpass
import logging
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import paramiko

from jupyter_compute.exceptions import TargetError
from jupyter_compute.targets.ssh.hostkeys import (
    USER_KNOWN_HOSTS,
    TrustOnlyPolicy,
    changed_key_error,
    key_name,
)

T = TypeVar("T")

MIN_PYTHON = (3, 9)
KEEPALIVE_SECONDS = 15
BACKOFF_FIRST, BACKOFF_MAX = 0.25, 5.0
#: SFTP and exec calls that get no answer for this long count as a dropped connection.
CALL_TIMEOUT = 20.0
#: paramiko's log of jump-host transports: a refused tunnel is an error we explain in
#: one line, not a second line on stderr (the handler keeps logging's last resort away;
#: an application's own logging configuration still sees the records).
JUMP_LOG = "paramiko.transport.jump"
logging.getLogger(JUMP_LOG).addHandler(logging.NullHandler())
#: The same for a transport over a ProxyCommand (a command that fails is explained).
PROXY_LOG = "paramiko.transport.proxycommand"
logging.getLogger(PROXY_LOG).addHandler(logging.NullHandler())
#: errno values of SFTP replies about a path (the connection itself is fine).
_PATH_ERRORS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EEXIST,
                          errno.ENOTDIR, errno.EISDIR, errno.ENOTEMPTY, errno.ENOSPC})


class HostUnreachableError(TargetError):
    """The host cannot be reached now: DNS, refused, timed out, or the connection dropped."""


class SSHAuthError(TargetError):
    """The host refused our credentials, or a key or secret could not be used."""


class RemotePythonError(TargetError):
    """No usable Python (≥ 3.9) at the configured path on the host."""


@dataclass(frozen=True)
class Endpoint:
    """Where and as whom to connect; holds names of secrets, never secrets."""

    host: str
    port: int = 22
    user: str = ""
    key: str | None = None
    password_env: str | None = None
    key_passphrase_env: str | None = None
    trusted: str | None = None          # fingerprint the user asked to trust
    known_hosts: str = ""               # the workspace's known_hosts file
    timeout: float = 10.0
    jump: Endpoint | None = None        # reached through this jump host (a bastion)
    alias: str = ""                     # the name given (--host, a hop of --proxy-jump)
    ssh_config: str = ""                # the ssh config file the alias was looked up in
    proxy_command: str = ""             # the ssh config's ProxyCommand (tokens expanded)

    @property
    def label(self) -> str:
        return f"{self.user}@{key_name(self.host, self.port)}"


@dataclass
class Probe:
    """What one remote command learns about the host when we connect."""

    version: tuple[int, ...]
    python: str                         # the interpreter's absolute path there
    workdir: str                        # absolute, ``~`` expanded
    nodename: str
    boot_id: str                        # "" where there is no /proc
    clock_offset: float                 # remote clock minus ours, in seconds

    def remote_now(self) -> float:
        return time.time() + self.clock_offset


# The one Python command a connection runs before it is used: the interpreter's
# version, the workdir (made if missing), the host's name, boot and clock. Given a
# run folder and a runtime folder, it also makes them and says which blobs (digests
# on stdin) and whether the runtime are missing, so a submit on a new connection
# costs one command, not two. It runs on whatever Python is there (even 2.x, to
# report its version), so it uses neither f-strings nor exist_ok.
_PROBE = r"""
import os, sys, time
w = os.path.abspath(os.path.expanduser(sys.argv[1]))
def mkdirs(p):
    if not os.path.isdir(p):
        try:
            os.makedirs(p)
        except OSError:
            pass
    return os.path.isdir(p)
ok = "1"
for d in ("blobs/sha256", "runs", "runtime", "envs"):
    if not mkdirs(os.path.join(w, d)):
        ok = "0"
try:
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
except Exception:
    boot = ""
out = ["%d.%d.%d" % tuple(sys.version_info[:3]), sys.executable, w, os.uname()[1], boot,
       repr(time.time()), ok]
if len(sys.argv) > 2 and ok == "1" and sys.version_info >= (3, 9):
    run, runtime = [os.path.join(w, p) for p in sys.argv[2:4]]
    try:
        os.mkdir(run, 448)  # 0700: its spec may hold the run's environment variables
    except OSError:
        pass
    if not os.path.exists(os.path.join(runtime, "jupyter_compute", "__init__.py")):
        mkdirs(os.path.join(runtime, "jupyter_compute"))
        out.append("runtime")
    for digest in sys.stdin.read().split():
        folder = os.path.join(w, "blobs", "sha256", digest[:2])
        if not os.path.exists(os.path.join(folder, digest)):
            mkdirs(folder)
            out.append(digest)
sys.stdout.write("\n".join(out) + "\n")
"""


@dataclass
class Connection:
    """A pooled connection to one endpoint; see the module docstring."""

    endpoint: Endpoint
    python: str
    workdir: str
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    client: paramiko.SSHClient | None = field(default=None, repr=False)
    probe: Probe | None = None
    #: Digests the host's blob store is known to hold, and runtime versions shipped.
    blobs: set[str] = field(default_factory=set, repr=False)
    runtimes: set[str] = field(default_factory=set)
    #: A submit's connect in the background (``SSHHost.warm_up``): thread, its error.
    warming: tuple[threading.Thread, list[BaseException]] | None = field(default=None,
                                                                          repr=False)
    #: The last manifest the host keeps as a blob (its digest and files), or None.
    manifest: tuple[str, dict[str, Any]] | None = field(default=None, repr=False)
    #: a process identity → when it was last seen alive (monotonic), to poll /proc sparingly.
    seen_alive: dict[str, float] = field(default_factory=dict, repr=False)
    connects: int = 0
    #: the jump hosts' connections, outermost first (closed with this one)
    jumps: list[paramiko.SSHClient] = field(default_factory=list, repr=False)
    #: exec channels opened (each costs two round trips: open, then exec)
    channels: int = 0
    # the decrypted key and the password, kept for reconnects (memory only)
    _credentials: tuple[paramiko.PKey | None, str | None] | None = field(default=None,
                                                                          repr=False)
    _hop_credentials: dict[Endpoint, tuple[paramiko.PKey | None, str | None]] = field(
        default_factory=dict, repr=False)
    _delay: float = 0.0
    _retry_at: float = 0.0
    _last_error: TargetError | None = None

    @property
    def connected(self) -> bool:
        transport = self.client.get_transport() if self.client else None
        return bool(transport and transport.is_active())

    # -- connecting --------------------------------------------------------------------

    def ensure(self, force: bool = False) -> Probe:
        """Connect and probe if needed; return the probe.

        ``force`` ignores the backoff wait (a person is waiting).
        """
        with self.lock:
            self.connect(force)
            if self.probe is None:
                self.probe = self._guard(self._probe)[0]
            return self.probe

    def inspect(self, digests: list[str], run: str, runtime: str) -> tuple[list[str], bool]:
        """Make ``run`` and say which ``digests`` and whether ``runtime`` the host lacks.

        ``run`` and ``runtime`` are relative to the workdir. On a new connection
        this is also its probe: one remote command instead of two.
        """
        with self.lock:
            self.connect()
            self.probe, missing = self._guard(lambda: self._probe(digests, run, runtime))
        return [d for d in missing if d != "runtime"], "runtime" in missing

    def connect(self, force: bool = False) -> None:
        """Open the connection unless it is open (no probe); see ``ensure``."""
        with self.lock:
            if self.connected:
                return
            self.close()
            wait = self._retry_at - time.monotonic()
            if not force and wait > 0 and self._last_error is not None:
                raise HostUnreachableError(f"{self._last_error} (next try in {wait:.1f}s)")
            try:
                self._connect()
            except HostUnreachableError as exc:
                self._delay = min(BACKOFF_MAX, self._delay * 2 or BACKOFF_FIRST)
                self._retry_at = time.monotonic() + self._delay
                self._last_error = exc
                self.close()
                raise
            except BaseException:
                self.close()
                raise
            self._delay, self._retry_at, self._last_error = 0.0, 0.0, None

    def _connect(self) -> None:
        ep = self.endpoint
        sock: Any = None
        if ep.jump is not None:
            sock = self._tunnel(ep.jump, ep.host, ep.port)
        elif ep.proxy_command:
            try:
                sock = paramiko.ProxyCommand(ep.proxy_command)
            except (paramiko.ProxyCommandFailure, OSError) as exc:  # e.g. no such program
                raise HostUnreachableError(self._proxy_failed(ep, exc)) from exc
        client = self.client = paramiko.SSHClient()
        if ep.proxy_command:
            client.set_log_channel(PROXY_LOG)
        self._login(client, ep, sock)
        self.connects += 1

    def _login(self, client: paramiko.SSHClient, ep: Endpoint,
               sock: paramiko.Channel | None, hop: bool = False) -> None:
        """Connect ``client`` to ``ep`` (over ``sock``, a tunnel, if given): host key,
        credentials, keepalive. ``hop``: ``ep`` is a jump host."""
        client.load_system_host_keys()  # ~/.ssh/known_hosts, if there is one
        workspace_keys = Path(ep.known_hosts)
        if workspace_keys.is_file():
            client.load_host_keys(str(workspace_keys))
        client.set_missing_host_key_policy(
            TrustOnlyPolicy(workspace_keys, ep.trusted, flag=_trust_flag(hop),
                            what="jump host" if hop else "host"))
        cached = self._hop_credentials.get(ep) if hop else self._credentials
        if cached is None:
            cached = credentials(ep)
            if hop:
                self._hop_credentials[ep] = cached
            else:
                self._credentials = cached
        pkey, password = cached
        try:
            client.connect(ep.host, ep.port, username=ep.user, pkey=pkey, password=password,
                           timeout=ep.timeout, banner_timeout=ep.timeout,
                           auth_timeout=ep.timeout, channel_timeout=ep.timeout,
                           allow_agent=True, look_for_keys=pkey is None and password is None,
                           sock=sock)
        except Exception as exc:
            if isinstance(exc, paramiko.AuthenticationException):
                # read the environment (or ask) again next time
                if hop:
                    self._hop_credentials.pop(ep, None)
                else:
                    self._credentials = None
            raise self._translate(exc, tried=_methods(ep, pkey, password), ep=ep,
                                  hop=hop) from exc
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(KEEPALIVE_SECONDS)
        # Without it, a small packet sent right after another (stdin, then EOF) waits
        # for the host's delayed ACK: 40 ms on every such command. (A tunnelled
        # connection has no socket of its own: its jump host's has the option set.)
        with contextlib.suppress(OSError, AttributeError):
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _tunnel(self, hop: Endpoint, host: str, port: int) -> paramiko.Channel:
        """Log in to jump host ``hop`` (through its own jumps) and open a ``direct-tcpip``
        channel from it to ``host:port``."""
        sock = self._tunnel(hop.jump, hop.host, hop.port) if hop.jump is not None else None
        client = paramiko.SSHClient()
        client.set_log_channel(JUMP_LOG)
        self.jumps.append(client)  # closed by close(), whatever happens next
        self._login(client, hop, sock, hop=True)
        transport = client.get_transport()
        assert transport is not None
        where = f"{host}:{port}"
        try:
            return transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                          timeout=hop.timeout)
        except paramiko.ChannelException as exc:
            if exc.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
                raise TargetError(
                    f"jump host {hop.label} refuses to forward connections to {where} "
                    f"({exc.text}); allow TCP forwarding there (AllowTcpForwarding yes in its "
                    "sshd_config) or choose another --proxy-jump") from exc
            raise HostUnreachableError(
                f"jump host {hop.label} cannot reach {where} ({exc.text}); check --host and "
                "--port as the jump host sees them, and that sshd runs there") from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise HostUnreachableError(f"lost the connection to jump host {hop.label} while "
                                       f"opening a tunnel to {where}: "
                                       f"{exc or type(exc).__name__}") from exc

    @staticmethod
    def _proxy_failed(ep: Endpoint, exc: BaseException) -> str:
        return (f"the ProxyCommand of Host {ep.alias} in {ep.ssh_config} failed "
                f"({getattr(exc, 'error', None) or exc}): {ep.proxy_command!r}; fix it "
                "there, or pass --ssh-config with another file")

    def _translate(self, exc: BaseException, tried: str, ep: Endpoint | None = None,
                   hop: bool = False) -> TargetError:
        ep = ep or self.endpoint
        where = f"{ep.host}:{ep.port}"
        if isinstance(exc, TargetError):  # from our host-key policy
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return changed_key_error(exc, key_name(ep.host, ep.port),
                                     [Path(USER_KNOWN_HOSTS).expanduser(), Path(ep.known_hosts)],
                                     flag=_trust_flag(hop))
        if isinstance(exc, paramiko.ProxyCommandFailure) or (
                ep.proxy_command and ep.jump is None and isinstance(
                    exc, (paramiko.SSHException, EOFError, OSError)) and not isinstance(
                    exc, paramiko.AuthenticationException)):
            return HostUnreachableError(self._proxy_failed(ep, exc))
        error = self._explain(exc, tried, ep, where, "--proxy-jump" if hop else "--host",
                              "the port in --proxy-jump" if hop else "--port",
                              "the user in --proxy-jump" if hop else "--user")
        if hop:
            return type(error)(f"jump host {ep.alias or ep.host}: {error}")
        return error

    def _explain(self, exc: BaseException, tried: str, ep: Endpoint, where: str,
                 host_flag: str, port_flag: str, user_flag: str) -> TargetError:
        if isinstance(exc, paramiko.BadAuthenticationType):
            return SSHAuthError(f"{ep.label} accepts only {', '.join(exc.allowed_types)} "
                                f"authentication, not what we tried ({tried}); pass --key or "
                                "--password-env accordingly")
        if isinstance(exc, paramiko.AuthenticationException):
            _SECRETS.pop((ep.label, "password"), None)  # a wrong prompt answer: ask again
            return SSHAuthError(f"authentication as {ep.label} failed (tried {tried}); check "
                                f"{user_flag}, and that the key is in that user's authorized_keys "
                                "or the password is right")
        if isinstance(exc, socket.gaierror):
            if ep.alias and ep.alias == ep.host:  # no HostName for it in the ssh config
                config = ep.ssh_config or "~/.ssh/config (none here)"
                return HostUnreachableError(
                    f"cannot resolve host {ep.host!r}: no Host {ep.host} in {config} and no "
                    f"such name (DNS: {exc.strerror}); fix {host_flag}, add that Host to the "
                    "ssh config, or pass --ssh-config with the file that has it")
            return HostUnreachableError(f"cannot resolve host {ep.host!r} (DNS: "
                                        f"{exc.strerror}); check {host_flag}"
                                        + (f" and the HostName of Host {ep.alias} in "
                                           f"{ep.ssh_config}" if ep.alias else ""))
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
            codes = {getattr(e, "errno", None) for e in exc.errors.values()}
            if errno.ECONNREFUSED in codes:
                return HostUnreachableError(f"connection to {where} refused; is sshd running "
                                            f"there, and is {port_flag} right?")
            return HostUnreachableError(f"no route to {where}; is the host up and on this "
                                        f"network? (check {host_flag})")
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return HostUnreachableError(f"timed out after {ep.timeout:g}s connecting to "
                                        f"{where}; is the host up, and is the port open?")
        if isinstance(exc, OSError):
            return HostUnreachableError(f"cannot connect to {where}: {exc.strerror or exc}")
        if isinstance(exc, (paramiko.SSHException, EOFError)):
            # e.g. no banner: the port is no SSH server, or sshd is restarting
            return HostUnreachableError(f"SSH handshake with {where} failed: "
                                        f"{exc or type(exc).__name__}; is that an SSH port?")
        return TargetError(f"cannot connect to {where}: {exc}")

    def _probe(self, digests: Sequence[str] = (), run: str = "",
               runtime: str = "") -> tuple[Probe, list[str]]:
        """Run ``_PROBE``: the probe, and what the host lacks of ``digests`` and ``runtime``."""
        ep = self.endpoint
        command = python_command(self.python, _PROBE, self.workdir,
                                 *((run, runtime) if run else ()))
        before = time.time()
        code, out, err = self._exec(command, "\n".join(digests).encode())
        after = time.time()
        why = err.decode(errors="replace").strip().splitlines()
        if code in (126, 127):
            raise RemotePythonError(f"no python at {self.python!r} on {ep.label} "
                                    f"({why[-1] if why else f'exit {code}'}); install Python "
                                    "≥ 3.9 there or pass --python PATH to one")
        lines = out.decode(errors="replace").splitlines()
        if code or len(lines) < 7:
            raise RemotePythonError(f"{self.python!r} on {ep.label} did not run "
                                    f"(exit {code}: {why[-1] if why else 'no output'}); pass "
                                    "--python PATH to a working Python ≥ 3.9")
        version = tuple(int(p) for p in lines[0].split("."))
        if version[:2] < MIN_PYTHON:
            raise RemotePythonError(f"{self.python!r} on {ep.label} is Python {lines[0]}; runs "
                                    "need Python ≥ 3.9: install one there or pass --python PATH")
        if lines[6] != "1":
            raise TargetError(f"cannot create the workdir {lines[2]} on {ep.label}; pass "
                              "--workdir with a folder the user may write")
        probe = Probe(version=version, python=lines[1], workdir=lines[2], nodename=lines[3],
                      boot_id=lines[4], clock_offset=float(lines[5]) - (before + after) / 2)
        return probe, lines[7:]

    def close(self) -> None:
        """Close the connection (the next call connects again)."""
        client, self.client, self.probe = self.client, None, None
        jumps, self.jumps = self.jumps, []
        # the target first, then the jump hosts from the innermost out
        for each in [client, *reversed(jumps)]:
            if each is None:
                continue
            try:
                each.close()
            except Exception:  # noqa: BLE001 - closing a dead transport may raise anything
                pass

    # -- using it ----------------------------------------------------------------------

    def run(self, command: str, stdin: bytes = b"",
            timeout: float = CALL_TIMEOUT) -> tuple[int, bytes, bytes]:
        """Run ``command`` (already quoted) on the host: ``(exit code, stdout, stderr)``."""
        with self.lock:
            self.ensure()
            assert self.client is not None
            transport = self.client.get_transport()
        return self._guard(lambda: self._exec(command, stdin, timeout, transport))

    def session(self, command: str, fn: Callable[[paramiko.Channel], T],
                timeout: float = CALL_TIMEOUT) -> T:
        """``fn(channel)`` on a new exec channel running ``command``, for a conversation
        over its stdin and stdout (see ``transfer``); the channel is closed after."""
        with self.lock:
            self.ensure()
            assert self.client is not None
            transport = self.client.get_transport()
        return self._guard(lambda: self._converse(transport, command, fn, timeout))

    def _guard(self, fn: Callable[[], T]) -> T:
        """``fn()``, with a dropped connection closed and raised as ``HostUnreachableError``."""
        try:
            return fn()
        except Exception as exc:
            if not self._dropped(exc):
                raise
            with self.lock:
                self.close()
            raise HostUnreachableError(f"lost the connection to {self.endpoint.label}: "
                                       f"{exc or type(exc).__name__}") from exc

    def _exec(self, command: str, stdin: bytes = b"", timeout: float = CALL_TIMEOUT,
              transport: paramiko.Transport | None = None) -> tuple[int, bytes, bytes]:
        if transport is None:
            assert self.client is not None
            transport = self.client.get_transport()

        def whole(chan: paramiko.Channel) -> tuple[int, bytes, bytes]:
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            # Our commands print little: read stdout, then stderr, then the status.
            out = chan.makefile("rb").read()
            err = chan.makefile_stderr("rb").read()
            return chan.recv_exit_status(), out, err

        return self._converse(transport, command, whole, timeout)

    def _converse(self, transport: paramiko.Transport | None, command: str,
                  fn: Callable[[paramiko.Channel], T], timeout: float) -> T:
        """``fn(channel)`` on a new exec channel running ``command``; closed after."""
        if transport is None or not transport.is_active():
            raise EOFError("the connection is closed")
        chan = transport.open_session(timeout=self.endpoint.timeout)
        self.channels += 1  # each costs two round trips: open, then exec
        try:
            chan.settimeout(timeout)
            chan.exec_command(command)
            return fn(chan)
        finally:
            chan.close()

    def _dropped(self, exc: BaseException) -> bool:
        """Whether ``exc`` means the connection is gone (not, say, a missing file)."""
        if isinstance(exc, OSError) and exc.errno in _PATH_ERRORS:
            return False
        if isinstance(exc, (EOFError, socket.timeout, TimeoutError, paramiko.SSHException,
                            ConnectionError)):
            return True
        transport = self.client.get_transport() if self.client else None
        return not (transport and transport.is_active())


def python_command(python: str, code: str, *args: str) -> str:
    """A command line running ``code`` with ``python`` and ``args``, all quoted.

    The code travels base64-encoded on one line: whatever the user's login shell
    (sh, bash, zsh, fish, csh), nothing in it is interpreted, and no newline needs
    quoting. Works with Python 2 too, so the probe can report an old version.

    >>> print(python_command("python3", "print(1)", "a b"))
    python3 -c 'exec(__import__("base64").b64decode("cHJpbnQoMSk="))' 'a b'
    """
    encoded = base64.b64encode(code.encode()).decode()
    line = f'exec(__import__("base64").b64decode("{encoded}"))'
    return " ".join(shlex.quote(a) for a in (python, "-c", line, *args))


def sh_command(script: str) -> str:
    """``script`` run by ``sh``, whatever the user's login shell is."""
    return f"sh -c {shlex.quote(script)}"


# -- credentials -------------------------------------------------------------------------

#: Secrets typed at a prompt, kept for this process's reconnects (memory only).
_SECRETS: dict[tuple[str, str], str] = {}


def credentials(ep: Endpoint) -> tuple[paramiko.PKey | None, str | None]:
    """The key (decrypted if needed) and password to offer; ``None`` where not configured."""
    pkey = None
    if ep.key:
        path = os.path.expanduser(ep.key)
        if not os.path.isfile(path):
            raise SSHAuthError(f"key file {path} does not exist; pass --key with the path of "
                               "a private key")
        try:
            pkey = paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError) as exc:
            # PEM keys raise the former; OpenSSH-format keys, through cryptography,
            # a TypeError ("Key is password-protected, but password was not provided")
            if isinstance(exc, TypeError) and "password" not in str(exc).lower():
                raise
            passphrase = secret(ep, "passphrase", ep.key_passphrase_env, "key_passphrase_env",
                                f"key {path}")
            try:
                pkey = paramiko.PKey.from_path(path, passphrase.encode())
            except (paramiko.SSHException, ValueError, TypeError) as exc:
                _SECRETS.pop((ep.label, "passphrase"), None)
                raise SSHAuthError(f"cannot decrypt key {path}: wrong passphrase? (from "
                                   f"${ep.key_passphrase_env or 'the prompt'})") from exc
        except (paramiko.SSHException, paramiko.UnknownKeyType, OSError, ValueError) as exc:
            raise SSHAuthError(f"cannot read key {path} ({exc}); pass --key with an OpenSSH "
                               "private key (not the .pub file)") from exc
    password = None
    if ep.password_env:
        password = secret(ep, "password", ep.password_env, "password_env", ep.label)
    return pkey, password


def secret(ep: Endpoint, what: str, env: str | None, option: str, of: str) -> str:
    """A secret from ``$env``, else a prompt on a terminal, else a clear error."""
    if env and os.environ.get(env):
        return os.environ[env]
    cached = _SECRETS.get((ep.label, what))
    if cached is not None:
        return cached
    if sys.stdin is not None and sys.stdin.isatty():
        value = getpass.getpass(f"{what} for {of}: ")
        _SECRETS[(ep.label, what)] = value
        return value
    if env:
        raise SSHAuthError(f"the {what} for {of} is needed: set the environment variable {env} "
                           f"(named by {option}), or run in a terminal to be prompted")
    flag = "--" + option.replace("_", "-")
    raise SSHAuthError(f"the {what} for {of} is needed: pass {flag} VAR naming an environment "
                       "variable that holds it (or use ssh-agent), or run in a terminal to be "
                       "prompted")


def _trust_flag(hop: bool) -> str:
    return "--trust-jump-host-key" if hop else "--trust-host-key"


def _methods(ep: Endpoint, pkey: paramiko.PKey | None, password: str | None) -> str:
    tried = [f"key {ep.key}"] if pkey is not None else []
    if password is not None:
        tried.append(f"password from ${ep.password_env}")
    tried.append("ssh-agent")
    if pkey is None and password is None:
        tried.append("~/.ssh/id_* keys")
    return ", ".join(tried)


# -- the pool ----------------------------------------------------------------------------

_POOL: dict[tuple[Endpoint, str, str], Connection] = {}
_POOL_LOCK = threading.Lock()


def connection(endpoint: Endpoint, python: str, workdir: str) -> Connection:
    """The process's one connection for this endpoint, python and workdir (not yet opened)."""
    key = (endpoint, python, workdir)
    with _POOL_LOCK:
        conn = _POOL.get(key)
        if conn is None:
            conn = _POOL[key] = Connection(endpoint, python, workdir)
        return conn


@atexit.register
def close_all() -> None:
    """Close every pooled connection (at exit, so paramiko's threads end quietly)."""
    with _POOL_LOCK:
        conns = list(_POOL.values())
    for conn in conns:
        with conn.lock:
            conn.close()
