"""An SSH host: run folders on a machine reached over SSH (paramiko, one pooled connection).

Everything lives under ``workdir`` there (default ``~/.jupyter_compute``)::

    blobs/sha256/ab/<digest>           content-addressed files, shared by all runs
    runtime/<digest>/jupyter_compute/  the agent and tracking API, once per version
    runs/<run-id>/                     the run folder (see protocol.py), 0700
    envs/<hash>/                       venvs built from requirements files, reused

``sync`` sends only the blobs the host lacks, with the runtime and the run's files,
in one stream on one exec channel (``transfer``): the host checks each blob's
sha256 before it renames it into place. The agent starts detached (setsid, nohup),
so a dropped connection or a closed kernel does not stop the run. Whatever is read
back (log, metrics, status) is kept in the workspace's run folder as well, so
``logs``, ``metrics`` and ``show`` work while the host is unreachable, and a
follower resumes at its byte offset after a reconnect. When the run ends
(``finish``), the rest of its log and metrics and its ``outputs/`` (one stream) are
fetched there, under names checked on this side: the host is not trusted to name
files on this machine.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import threading
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import jupyter_compute.targets.ssh.sshconfig as sshconfig
import jupyter_compute.targets.ssh.transfer as transfer
from jupyter_compute import protocol
from jupyter_compute.exceptions import RemoteCommandError, TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.targets.base import Host
from jupyter_compute.targets.runtime import runtime_digest, runtime_files
from jupyter_compute.targets.ssh.connection import (
    CALL_TIMEOUT,
    Connection,
    HostUnreachableError,
    connection,
    python_command,
    read_file,
    sh_command,
)
from jupyter_compute.targets.ssh.hostkeys import KNOWN_HOSTS
from jupyter_compute.targets.ssh.transfer import safe_name

__all__ = ["SSHHost", "SyncStats", "put", "safe_name"]

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    import paramiko

    from jupyter_compute.snapshot import Snapshot
    from jupyter_compute.targets.base import SubmitContext

DEFAULT_WORKDIR = "~/.jupyter_compute"
DEFAULT_PYTHON = "python3"
DEFAULT_TIMEOUT = 10
#: In the local run folder: what ``sync`` sent (``SyncStats`` as JSON).
SYNC_RECORD = "sync.json"
#: In the local run folder: the final log, metrics, status and outputs are all here.
FETCHED = ".fetched"
#: The agent's own stdout and stderr on the host (start-up errors land here).
AGENT_OUT = "agent.out"
#: ``ctx.scratch`` key: what the host lacks, learnt by ``paths`` on a new connection.
SCRATCH_MISSING = "ssh.missing"
_APPENDED = (protocol.LOG, protocol.METRICS)
_MIRRORED = (*_APPENDED, protocol.STATUS)
#: A live agent is looked up in the host's /proc at most this often per run.
ALIVE_RECHECK_SECONDS = 1.0
#: Private files of a run (its spec may hold environment variables): owner only.
_PRIVATE = (protocol.SPEC, protocol.STATUS, protocol.CANCEL)


@dataclass
class SyncStats:
    """What one ``sync`` sent, in files and bytes (the last attempt's), and what it cost
    in round trips; kept as ``sync.json`` in the local run folder.

    >>> run = submit("train.py", target="vm")
    >>> json.loads((ws.run_dir(run.id) / SYNC_RECORD).read_text())["blob_bytes"]
    1024
    """

    blobs_checked: int = 0    # digests not known to be there: asked about, or (a few
                              # small ones) sent unasked, as one round trip costs more
    blobs_sent: int = 0
    blob_bytes: int = 0       # their sizes (on the wire: sent_bytes, compressed where it paid)
    manifest_bytes: int = 0
    run_bytes: int = 0        # spec.json and status.json
    runtime_bytes: int = 0    # agent and tracking API, once per version and host
    sent_bytes: int = 0       # all of the stream (frames, compressed), the last attempt's
    round_trips: int = 0      # waits on the host: channel open, exec, answers
    channels: int = 0         # exec channels (one per attempt)
    attempts: int = 1         # 2 after a dropped connection
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.blob_bytes + self.manifest_bytes + self.run_bytes + self.runtime_bytes


class SSHHost(Host):
    """A VM or server reached over SSH; see the module docstring."""

    options = {
        "host": (str, "host name or address"),
        "port": (int, "SSH port (default 22)"),
        "user": (str, "user to log in as (default: your local user name)"),
        "key": (str, "private key file (default: ssh-agent, then ~/.ssh/id_*)"),
        "password_env": (str, "NAME of an environment variable holding the password"),
        "key_passphrase_env": (str, "NAME of an environment variable holding the key's "
                                    "passphrase"),
        "workdir": (str, f"folder on the host for blobs, runs and environments (default "
                         f"{DEFAULT_WORKDIR})"),
        "python": (str, f"Python ≥ 3.9 on the host (default {DEFAULT_PYTHON})"),
        "trust_host_key": (str, "SHA256:… fingerprint of the host key to trust (printed "
                                "when the key is unknown)"),
        "connect_timeout": (int, f"seconds to wait for a connection (default "
                                 f"{DEFAULT_TIMEOUT})"),
        "offline": (bool, "the host has no package index: environments install from wheels "
                          "sent from here (found out by asking the host when not given)"),
    }

    _finishing = threading.Lock()

    # -- the connection ----------------------------------------------------------------

    @cached_property
    def conn(self) -> Connection:
        """The process's pooled connection to this host (opened on first use)."""
        host = self.config.get("host")
        if not host:
            raise UsageError(f"ssh target {self.name!r} has no host; attach it with "
                             "--host NAME")
        # the ssh config's alias, user, port, key and jump hosts (explicit options win)
        endpoint = sshconfig.resolve(
            self.config, known_hosts=str(self.workspace.dir / KNOWN_HOSTS),
            timeout=float(self.config.get("connect_timeout") or DEFAULT_TIMEOUT))
        return connection(endpoint, str(self.config.get("python") or DEFAULT_PYTHON),
                          str(self.config.get("workdir") or DEFAULT_WORKDIR))

    @property
    def label(self) -> str:
        """``user@host:port``, for messages."""
        return self.conn.endpoint.label

    def remote(self, run_id: str, *names: str) -> str:
        """The absolute path of the run folder (or a file in it) on the host."""
        return posixpath.join(self.conn.ensure().workdir, "runs", run_id, *names)

    # -- Host ----------------------------------------------------------------------------

    def check(self) -> None:
        """Connect once: host key, credentials, SFTP, Python ≥ 3.9 and the workdir."""
        self.conn.ensure(force=True)

    def prepare(self) -> None:
        self.conn.connect(force=True)  # a person is waiting: try now, whatever the backoff

    def paths(self, ctx: SubmitContext) -> dict[str, Any]:
        conn = self.conn
        if conn.probe is None:
            self._inspect(ctx)  # a new connection: its probe also tells what the host lacks
        work = conn.ensure().workdir
        return {"interpreter": ctx.spec.python,  # None: the agent's own, the host's python
                "manifest": protocol.MANIFEST, "blobs": posixpath.join(work, "blobs"),
                "env_root": posixpath.join(work, "envs"),
                "pythonpath": [posixpath.join(work, "runtime", runtime_digest())]}

    def run_dir(self, run_id: str) -> str:
        return self.remote(run_id)

    def env_root(self) -> tuple[str, str] | None:
        probe = self.conn.ensure()
        return probe.python, posixpath.join(probe.workdir, "envs")

    def sync(self, ctx: SubmitContext) -> None:
        """Send what the host lacks in one stream (see ``transfer``).

        Every step is idempotent and blobs that arrived whole are kept: after a drop,
        reconnect, ask again, and send only the rest.
        """
        started = time.monotonic()
        for attempt in (1, 2):
            stats = SyncStats(attempts=attempt)
            try:
                self._sync(ctx, stats)
                break
            except HostUnreachableError:
                if attempt == 2:
                    raise
                ctx.scratch.pop(SCRATCH_MISSING, None)
                self.conn.ensure(force=True)
        stats.seconds = round(time.monotonic() - started, 4)
        protocol.write_json_atomic(str(self.workspace.run_dir(ctx.run_id) / SYNC_RECORD),
                                   {**asdict(stats), "total": stats.total})

    def read(self, run_id: str, name: str, offset: int = 0) -> bytes:
        local = self.workspace.run_dir(run_id)
        if name in _MIRRORED and (local / FETCHED).exists():
            return _read_local(local / name, offset)  # final: no need to ask the host
        try:
            if name in _APPENDED:
                return self._pull(run_id, name, offset)
            data = self.conn.call(lambda sftp: read_file(sftp, self.remote(run_id, name),
                                                         offset))
        except HostUnreachableError:
            return _read_local(local / name, offset)  # what was last fetched
        if name == protocol.STATUS:
            if not data:
                return _read_local(local / name, offset)
            data = self._mirror_status(run_id, data)
        return data

    def write(self, run_id: str, name: str, data: bytes) -> None:
        self.conn.call(lambda sftp: put(sftp, data, self.remote(run_id, name), mode=0o600))
        if name != protocol.SECRETS:  # the values rest nowhere but where the agent reads them
            protocol.write_atomic(str(self.workspace.run_dir(run_id) / name), data, 0o600)

    def start_agent(self, run_id: str, python: str | None = None) -> None:
        probe = self.conn.ensure()
        q = shlex.quote
        run = self.remote(run_id)
        agent = posixpath.join(probe.workdir, "runtime", runtime_digest(), "jupyter_compute",
                               "agent.py")
        # Its own session (setsid) and SIGHUP ignored (nohup): the agent outlives this
        # SSH session. Nothing of the run is on this line but quoted paths; the script's
        # arguments travel in spec.json.
        self._checked(sh_command(
            f"cd {q(run)} || exit 1; S=; command -v setsid >/dev/null 2>&1 && S=setsid; "
            f"$S nohup {q(python or probe.python)} {q(agent)} {q(run)} </dev/null "
            f">{AGENT_OUT} 2>&1 &"), "start the agent")

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 60
            ) -> tuple[int, bytes, bytes]:
        """Run ``argv`` on the host, every argument quoted for its shell."""
        return self.conn.run(" ".join(shlex.quote(str(a)) for a in argv), stdin, timeout)

    def process_alive(self, ident: dict[str, Any]) -> bool | None:
        conn = self.conn
        key = f"{ident.get('host')}:{ident.get('pid')}:{ident.get('start_ticks')}"
        seen = conn.seen_alive.get(key)
        if seen is not None and time.monotonic() - seen < ALIVE_RECHECK_SECONDS:
            return True
        try:
            known = conn.process_alive(ident)
        except HostUnreachableError:
            return True  # unknown: a network outage must never make a run lost
        if known:
            conn.seen_alive[key] = time.monotonic()
        else:
            conn.seen_alive.pop(key, None)
        return known

    def heartbeat_age(self, run_id: str) -> float | None:
        try:
            probe = self.conn.ensure()
            beat = self.conn.call(lambda sftp: _mtime(sftp, self.remote(run_id,
                                                                       protocol.HEARTBEAT)))
        except HostUnreachableError:
            return 0.0  # unknown: a network outage must never make a run lost
        return None if beat is None else probe.remote_now() - beat

    def signal(self, ident: dict[str, Any], name: str, group: bool = False) -> None:
        """Through Python, not ``kill``: dash's ``kill`` takes no negative (group) pids."""
        if not name.isidentifier() or not self.conn.process_alive(ident):
            return  # gone, or not a process of this host (its pid means nothing here)
        call = "os.killpg" if group else "os.kill"
        code = (f"import os, signal\ntry:\n    {call}({int(ident['pid'])}, signal.{name})\n"
                "except OSError:\n    pass\n")
        self.conn.run(python_command(self.conn.ensure().python, code))

    def finish(self, run_id: str) -> None:
        """Fetch the rest of the log and metrics, and the outputs, of a run that ended."""
        local = self.workspace.run_dir(run_id)
        if (local / FETCHED).exists():
            return
        try:
            with self._finishing:
                if (local / FETCHED).exists():
                    return
                for name in _APPENDED:
                    self._pull(run_id, name, _size(local / name))
                self._fetch_outputs(run_id)
                (local / FETCHED).touch()
        except HostUnreachableError:
            return  # fetched on a later read

    def outputs_dir(self, run_id: str) -> Path:
        """The local copy of the run's ``outputs/``, fetched from the host first."""
        local = self.workspace.run_dir(run_id)
        if not (local / FETCHED).exists():
            if _terminal(self.read(run_id, protocol.STATUS)):
                self.finish(run_id)
            if not (local / FETCHED).exists():
                try:
                    self._fetch_outputs(run_id)  # still running: what is there so far
                except HostUnreachableError:
                    pass
        return local / protocol.OUTPUTS

    # -- sync ------------------------------------------------------------------------------

    def _sync(self, ctx: SubmitContext, stats: SyncStats) -> None:
        """One exec channel: ask what the host lacks (unless known), then stream it all."""
        from jupyter_compute.snapshot import BlobStore

        conn, snap, run_id = self.conn, ctx.snap, ctx.run_id
        probe = conn.ensure()
        sizes = _needed_blobs(ctx, self.workspace.blobs_dir)
        digests = sorted(sizes)
        version = runtime_digest()
        known = ctx.scratch.pop(SCRATCH_MISSING, None)
        if known is not None and not known[3].issuperset(d for d in digests
                                                         if d not in conn.blobs):
            known = None  # wheels were added after the probe (an environment): ask again
        ask = [] if known is not None else [d for d in digests if d not in conn.blobs]
        if known is None and version in conn.runtimes and sum(
                sizes[d] for d in ask) <= transfer.SEND_UNASKED:
            known = (ask, False, len(ask))  # cheaper to send them than to ask: no wait
            ask = []
        wait = known is None
        stats.blobs_checked = known[2] if known is not None else len(ask)
        store = BlobStore(self.workspace.blobs_dir)
        manifest = Path(snap.manifest_path).read_bytes()
        spec = json.dumps(ctx.agent, indent=1).encode()
        status = (self.workspace.run_dir(run_id) / protocol.STATUS).read_bytes()
        command = python_command(probe.python, transfer.RECEIVE, probe.workdir,
                                 posixpath.join("runs", run_id),
                                 posixpath.join("runtime", version))

        def converse(chan: paramiko.Channel) -> None:
            stats.round_trips += 2  # the channel opened, the command started
            stats.channels += 1
            out = chan.makefile("rb")
            writer = transfer.FrameWriter(chan.sendall)
            writer.write(f"W {len(ask)}\n{''.join(d + chr(10) for d in ask)}".encode())
            try:
                if wait:
                    writer.flush()
                    missing, ship_runtime = self._answer(chan, out, transfer.read_missing)
                    stats.round_trips += 1
                else:  # known: send at once, the answer is read at the end
                    missing, ship_runtime = (known[0], known[1]) if known else ([], False)
                for digest in missing:
                    stats.blob_bytes += writer.blob(digest, store.path(digest))
                    stats.blobs_sent += 1
                if ship_runtime:  # in order, __init__.py last: it marks the runtime complete
                    for name, data in runtime_files().items():
                        writer.frame(f"R {name}", *transfer.pack(data))
                        stats.runtime_bytes += len(data)
                for name, data in ((protocol.MANIFEST, manifest), (protocol.SPEC, spec),
                                   (protocol.STATUS, status)):
                    mode = 0o600 if name in _PRIVATE else 0o644
                    writer.frame(f"F {name} {mode:o}", *transfer.pack(data))
                writer.write(b"E\n")
                writer.flush()
                chan.shutdown_write()
            except OSError:
                if not chan.get_transport().is_active():
                    raise
                # The receiver stopped reading: what it said is read below.
            if not wait:
                self._answer(chan, out, transfer.read_missing)
            self._answer(chan, out, transfer.read_result)
            stats.round_trips += 1
            stats.sent_bytes += writer.sent

        try:
            conn.session(command, converse, timeout=max(CALL_TIMEOUT, 60.0))
        except transfer.ReceiverError as exc:
            raise self._refused(exc.said, snap, store) from None
        conn.blobs.update(digests)
        conn.runtimes.add(version)
        stats.manifest_bytes = len(manifest)
        stats.run_bytes = len(spec) + len(status)

    def _answer(self, chan: paramiko.Channel, out: Any, read: Any) -> Any:
        """``read(out)``; an empty answer on a dead link is a dropped connection."""
        try:
            return read(out)
        except transfer.ReceiverError as exc:
            if not exc.said and not chan.get_transport().is_active():
                raise EOFError("the connection dropped during sync") from None
            if not exc.said:
                err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
                raise RemoteCommandError(chan.recv_exit_status(), f"sync on {self.label}",
                                         err) from None
            raise

    def _refused(self, said: list[bytes], snap: Snapshot, store: Any) -> Exception:
        words = [w.decode(errors="replace") for w in said]
        if words[:2] == ["ERR", "corrupt"] and len(words) > 2:
            digest = words[2]
            names = sorted(n for n, (d, _size, _mode) in snap.files.items() if d == digest)
            return transfer.CorruptBlobError(
                f"{', '.join(names) or 'a file'} (sha256 {digest[:12]}…) arrived on "
                f"{self.label} with other bytes than its hash: the host refused it and keeps "
                f"nothing of it; submit again, and if it repeats, delete {store.path(digest)} "
                "(a damaged copy in this workspace) first")
        return TargetError(f"sync to {self.label} failed: {' '.join(words[1:]) or words}")

    def _inspect(self, ctx: SubmitContext) -> None:
        """On a new connection: its probe also makes the run folder and says which blobs
        and whether the runtime the host lacks (kept for ``sync``)."""
        conn = self.conn
        unknown = sorted(set(_needed_blobs(ctx, self.workspace.blobs_dir)) - conn.blobs)
        missing, runtime = conn.inspect(unknown, posixpath.join("runs", ctx.run_id),
                                        posixpath.join("runtime", runtime_digest()))
        ctx.scratch[SCRATCH_MISSING] = (missing, runtime, len(unknown), set(unknown))

    # -- the local mirror --------------------------------------------------------------

    def _pull(self, run_id: str, name: str, offset: int) -> bytes:
        """Bytes of append-only ``name`` from ``offset``, appended to the local mirror.

        The host is read from where the mirror ends (or from ``offset`` if earlier), so
        the mirror is always a gap-free prefix of the host's file.
        """
        path = self.workspace.run_dir(run_id) / name
        start = min(offset, _size(path))
        data = self.conn.call(lambda sftp: read_file(sftp, self.remote(run_id, name), start))
        _append_local(path, start, data)
        return data[offset - start:]

    def _mirror_status(self, run_id: str, data: bytes) -> bytes:
        """Keep the host's status here too; a terminal status here is never replaced."""
        path = self.workspace.run_dir(run_id) / protocol.STATUS
        try:
            have = path.read_bytes()
        except FileNotFoundError:
            have = b""
        if have == data:
            return data
        if _terminal(have) and not _terminal(data):
            return have
        protocol.write_atomic(str(path), data, 0o600)
        return data

    def _fetch_outputs(self, run_id: str) -> list[str]:
        """The run's new or changed ``outputs/`` files, in one stream (``transfer``)."""
        local = self.workspace.run_dir(run_id) / protocol.OUTPUTS
        if os.path.islink(local):
            return []  # never written through
        index = json.dumps(transfer.local_index(local)).encode()
        command = python_command(self.conn.ensure().python, transfer.SEND_OUTPUTS,
                                 self.remote(run_id, protocol.OUTPUTS))

        def converse(chan: paramiko.Channel) -> list[str]:
            chan.sendall(index)
            chan.shutdown_write()
            try:
                return transfer.receive_outputs(chan.makefile("rb"), local)
            except EOFError:
                if not chan.get_transport().is_active():
                    raise  # a dropped connection
                err = chan.makefile_stderr("rb").read().decode(errors="replace").strip()
                raise RemoteCommandError(chan.recv_exit_status(),
                                         f"send the outputs of {run_id} on {self.label}",
                                         err) from None

        return self.conn.session(command, converse)

    def _checked(self, command: str, what: str, stdin: bytes = b"") -> bytes:
        code, out, err = self.conn.run(command, stdin)
        if code:
            raise RemoteCommandError(code, f"{what} on {self.label}",
                                     err.decode(errors="replace"))
        return out


def _needed_blobs(ctx: SubmitContext, blobs_dir: Path) -> dict[str, int]:
    """``{digest: size}`` of the blobs the run needs on the host: the snapshot's files and
    the wheels its environment installs from (``wheelhouse``), each once."""
    from jupyter_compute.wheelhouse import wheel_sources

    sizes = {digest: size for digest, size, _mode in ctx.snap.files.values()}
    # The agent's (with wheels for a host with no index), or the run's own (a container
    # launcher installs it into an image: the agent's is None then).
    for digest in [*wheel_sources(ctx.agent.get("environment")),
                   *wheel_sources(ctx.environment)]:
        if digest not in sizes:
            sizes[digest] = (blobs_dir / "sha256" / digest[:2] / digest).stat().st_size
    return sizes


# -- SFTP --------------------------------------------------------------------------------


def put(sftp: paramiko.SFTPClient, src: bytes | Path, dest: str, atomic: bool = True,
        mode: int | None = None) -> int:
    """Upload ``src`` (bytes or a local file) to ``dest``; return the bytes sent.

    ``atomic`` writes a temporary name first and renames it, so a reader (or a
    concurrent upload of the same blob) never sees half a file. ``mode`` is set
    before any byte is written.
    """
    tmp = f"{dest}.tmp-{os.getpid()}-{os.urandom(4).hex()}" if atomic else dest
    if isinstance(src, bytes):
        with sftp.open(tmp, "wb") as f:
            if mode is not None:
                f.chmod(mode)
            f.set_pipelined(True)
            f.write(src)
        sent = len(src)
    else:
        with open(src, "rb") as fl:
            sftp.putfo(fl, tmp, confirm=False)
            sent = fl.tell()
    if atomic:
        sftp.posix_rename(tmp, dest)
    return sent


def _mtime(sftp: paramiko.SFTPClient, path: str) -> float | None:
    try:
        return sftp.stat(path).st_mtime
    except FileNotFoundError:
        return None


# -- local files -------------------------------------------------------------------------


def _terminal(raw: bytes) -> bool:
    try:
        return RunStatus(json.loads(raw)["status"]).is_terminal()
    except (ValueError, KeyError, TypeError):
        return False


def _read_local(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _append_local(path: Path, start: int, data: bytes) -> None:
    """Extend the mirror ``path`` with the part of ``data`` (at ``start``) it lacks.

    Under an exclusive lock, so two followers (a kernel and a CLI) never both append
    the same bytes.
    """
    if not data:
        return
    with open(path, "ab") as f:
        _lock(f.fileno())
        have = os.fstat(f.fileno()).st_size
        if start <= have < start + len(data):
            f.write(data[have - start:])


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: one follower at a time is the common case
        return
    fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file is closed
