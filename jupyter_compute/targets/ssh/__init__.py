"""The ``ssh`` target: runs on any machine reachable by SSH that has Python ≥ 3.9.

::

    jupyter-compute attach vm --type ssh --host 10.0.0.5 --user me --key ~/.ssh/id_ed25519
    jupyter-compute submit train.py --target vm --wait -- --epochs 3

Nothing is installed on the host: the agent and the tracking API travel with the
runs. Everything lives under ``workdir`` there (default ``~/.jupyter_compute``)::

    blobs/sha256/ab/<digest>           content-addressed files, shared by all runs
    runtime/<digest>/jupyter_compute/  the agent and tracking API, once per version
    runs/<run-id>/                     the run folder (see protocol.py)
    envs/<hash>/                       venvs built from requirements files, reused

``sync`` uploads only the blobs the host lacks (SFTP, a temporary name, then a
rename). The agent starts detached (setsid, nohup), so a dropped connection or a
closed kernel does not stop the run. Whatever is read back (log, metrics, status)
is kept in the workspace's run folder as well, so ``logs``, ``metrics`` and
``show`` work while the host is unreachable, and a follower resumes at its byte
offset after a reconnect. When the run ends, its ``outputs/`` are fetched there.
"""

from __future__ import annotations

import getpass
import json
import os
import posixpath
import shlex
import stat
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import RemoteCommandError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.targets.ssh.connection import (
    Connection,
    Endpoint,
    HostUnreachableError,
    RemotePythonError,
    SSHAuthError,
    connection,
    python_command,
    read_file,
    sh_command,
)
from jupyter_compute.targets.ssh.hostkeys import KNOWN_HOSTS, HostKeyError
from jupyter_compute.targets.base import ComputeTarget, runtime_digest, runtime_files

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    import paramiko

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.snapshot import Snapshot
    from jupyter_compute.store import RunRecord

__all__ = ["HostKeyError", "HostUnreachableError", "RemotePythonError", "SSHAuthError",
           "SSHTarget", "SyncStats"]

DEFAULT_WORKDIR = "~/.jupyter_compute"
DEFAULT_PYTHON = "python3"
DEFAULT_TIMEOUT = 10
#: In the local run folder: what ``sync`` sent (``SyncStats`` as JSON).
SYNC_RECORD = "sync.json"
#: In the local run folder: the final log, metrics, status and outputs are all here.
FETCHED = ".fetched"
#: The agent's own stdout and stderr on the host (start-up errors land here).
AGENT_OUT = "agent.out"
_APPENDED = (protocol.LOG, protocol.METRICS)
_MIRRORED = (*_APPENDED, protocol.STATUS)
#: A live agent is looked up in the host's /proc at most this often per run.
ALIVE_RECHECK_SECONDS = 1.0



@dataclass
class SyncStats:
    """What one ``sync`` sent over SFTP, in files and bytes.

    >>> run = submit("train.py", target="vm")
    >>> run.target.last_sync.blob_bytes      # only the files the host lacked
    1024
    """

    blobs_checked: int = 0    # digests asked about (the rest were known to be there)
    blobs_sent: int = 0
    blob_bytes: int = 0
    manifest_bytes: int = 0
    run_bytes: int = 0        # spec.json and status.json
    runtime_bytes: int = 0    # agent and tracking API, once per version and host

    @property
    def total(self) -> int:
        return self.blob_bytes + self.manifest_bytes + self.run_bytes + self.runtime_bytes


class SSHTarget(ComputeTarget):
    """A VM or server reached over SSH (paramiko); see the module docstring.

    >>> attach("vm", "ssh", host="10.0.0.5", user="me", key="~/.ssh/id_ed25519")
    >>> submit("train.py", target="vm").wait()
    <RunStatus.COMPLETED: 'Completed'>
    """

    kind = "ssh"
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
    }

    def __init__(self, name: str, config: dict[str, Any], workspace: Any) -> None:
        super().__init__(name, config, workspace)
        #: What the last ``sync`` of this target object sent.
        self.last_sync: SyncStats | None = None
        self._conn: Connection | None = None
        # (run id, missing blobs, runtime missing), found by agent_spec for sync
        self._inspected: tuple[str, list[str], bool] | None = None

    # -- the connection ----------------------------------------------------------------

    @property
    def conn(self) -> Connection:
        """This target's pooled connection (opened on first use)."""
        if self._conn is None:
            host = self.config.get("host")
            if not host:
                raise UsageError(f"ssh target {self.name!r} has no host; attach it with "
                                 "--host NAME")
            endpoint = Endpoint(
                host=str(host), port=int(self.config.get("port") or 22),
                user=str(self.config.get("user") or getpass.getuser()),
                key=self.config.get("key"), password_env=self.config.get("password_env"),
                key_passphrase_env=self.config.get("key_passphrase_env"),
                trusted=self.config.get("trust_host_key"),
                known_hosts=str(self.workspace.dir / KNOWN_HOSTS),
                timeout=float(self.config.get("connect_timeout") or DEFAULT_TIMEOUT))
            self._conn = connection(endpoint, str(self.config.get("python") or DEFAULT_PYTHON),
                                    str(self.config.get("workdir") or DEFAULT_WORKDIR))
        return self._conn

    def _remote(self, run_id: str, *names: str) -> str:
        probe = self.conn.ensure()
        return posixpath.join(probe.workdir, "runs", run_id, *names)

    # -- hooks -------------------------------------------------------------------------

    def validate(self, spec: RunSpec) -> None:
        if spec.docker_image:
            raise UsageError("docker images on an ssh target are not supported yet; run "
                             "without docker_image (environment: current or requirements), "
                             "or use a docker target")

    def check(self) -> None:
        """Connect once: host key, credentials, SFTP, Python ≥ 3.9 and the workdir."""
        self.conn.ensure(force=True)

    def prepare(self) -> None:
        self.conn.connect(force=True)  # a person is waiting: try now, whatever the backoff

    def agent_spec(self, record: RunRecord, spec: RunSpec, snap: Snapshot) -> dict[str, Any]:
        conn = self.conn
        if conn.probe is None:
            # A new connection: its probe also tells what the host lacks (for sync).
            self._inspected = (record.id, *self._inspect(record.id, snap))
        work = conn.ensure().workdir
        agent = self.base_agent_spec(record, spec)
        agent.update(
            interpreter=spec.python,  # None: the agent's own, the attached python
            manifest=protocol.MANIFEST,
            blobs=posixpath.join(work, "blobs"),
            env_root=posixpath.join(work, "envs"),
            pythonpath=[posixpath.join(work, "runtime", runtime_digest())],
        )
        return agent

    def sync(self, run_id: str, snap: Snapshot, agent_spec: dict[str, Any]) -> None:
        for attempt in (1, 2):  # every step is idempotent: after a drop, reconnect and redo
            try:
                stats = self._sync(run_id, snap, agent_spec)
                break
            except HostUnreachableError:
                if attempt == 2:
                    raise
                self.conn.ensure(force=True)
        self.last_sync = stats
        protocol.write_json_atomic(str(self.workspace.run_dir(run_id) / SYNC_RECORD),
                                   {**asdict(stats), "total": stats.total})

    def _sync(self, run_id: str, snap: Snapshot, agent_spec: dict[str, Any]) -> SyncStats:
        from jupyter_compute.snapshot import BlobStore

        conn = self.conn
        work = conn.ensure().workdir
        run = self._remote(run_id)
        digests = sorted({digest for digest, _size, _mode in snap.files.values()})
        version = runtime_digest()
        runtime = posixpath.join(work, "runtime", version)
        stats = SyncStats(blobs_checked=len([d for d in digests if d not in conn.blobs]))
        inspected, self._inspected = self._inspected, None
        if inspected is not None and inspected[0] == run_id:
            missing, ship_runtime = inspected[1], inspected[2]
        else:
            missing, ship_runtime = self._inspect(run_id, snap)
        store = BlobStore(self.workspace.blobs_dir)
        for digest in missing:
            dest = posixpath.join(work, "blobs", "sha256", digest[:2], digest)
            stats.blob_bytes += conn.call(partial(_put, src=store.path(digest), dest=dest))
            stats.blobs_sent += 1
        conn.blobs.update(digests)
        if ship_runtime:
            package = posixpath.join(runtime, "jupyter_compute")
            files = sorted(runtime_files().items(), key=lambda kv: kv[0] == "__init__.py")
            for name, data in files:  # __init__.py last: it marks the runtime complete
                stats.runtime_bytes += conn.call(
                    partial(_put, src=data, dest=posixpath.join(package, name)))
        conn.runtimes.add(version)
        manifest = Path(snap.manifest_path).read_bytes()
        spec = json.dumps(agent_spec, indent=1).encode()
        status = (self.workspace.run_dir(run_id) / protocol.STATUS).read_bytes()
        for name, data in ((protocol.MANIFEST, manifest), (protocol.SPEC, spec),
                           (protocol.STATUS, status)):
            # a fresh run folder nobody reads yet: no need for a temporary name
            conn.call(partial(_put, src=data, dest=posixpath.join(run, name), atomic=False))
        stats.manifest_bytes = len(manifest)
        stats.run_bytes = len(spec) + len(status)
        return stats

    def launch(self, run_id: str) -> None:
        probe = self.conn.ensure()
        q = shlex.quote
        run = self._remote(run_id)
        agent = posixpath.join(probe.workdir, "runtime", runtime_digest(), "jupyter_compute",
                               "agent.py")
        # Its own session (setsid) and SIGHUP ignored (nohup): the agent outlives this
        # SSH session. Nothing of the run is on this line but quoted paths; the script's
        # arguments travel in spec.json.
        self._checked(sh_command(
            f"cd {q(run)} || exit 1; S=; command -v setsid >/dev/null 2>&1 && S=setsid; "
            f"$S nohup {q(probe.python)} {q(agent)} {q(run)} </dev/null >{AGENT_OUT} 2>&1 &"),
            "start the agent")

    def read(self, run_id: str, name: str, offset: int = 0) -> bytes:
        local = self.workspace.run_dir(run_id)
        if name in _MIRRORED and (local / FETCHED).exists():
            return _read_local(local / name, offset)  # final: no need to ask the host
        try:
            if name in _APPENDED:
                return self._pull(run_id, name, offset)
            data = self.conn.call(lambda sftp: read_file(sftp, self._remote(run_id, name),
                                                         offset))
        except HostUnreachableError:
            return _read_local(local / name, offset)  # what was last fetched
        if name == protocol.STATUS:
            if not data:
                return _read_local(local / name, offset)
            self._mirror_status(run_id, data)
        return data

    def write(self, run_id: str, name: str, data: bytes) -> None:
        self.conn.call(lambda sftp: _put(sftp, data, self._remote(run_id, name)))
        _write_local(self.workspace.run_dir(run_id) / name, data)

    def alive(self, run_id: str, status: dict[str, Any]) -> bool:
        conn = self.conn
        try:
            probe = conn.ensure()
            ident = status.get("agent")
            if not ident:  # Queued: the agent has not started (yet)
                return _age(status.get("created")) < protocol.START_TIMEOUT
            seen = conn.seen_alive.get(run_id)
            if seen is not None and time.monotonic() - seen < ALIVE_RECHECK_SECONDS:
                return True
            known = conn.process_alive(ident)
            if known is None:  # no /proc there: the heartbeat, against the host's clock
                beat = conn.call(lambda sftp: _mtime(sftp, self._remote(run_id,
                                                                        protocol.HEARTBEAT)))
                when = beat if beat is not None else _timestamp(status.get("updated"))
                known = probe.remote_now() - when < protocol.HEARTBEAT_TIMEOUT
        except HostUnreachableError:
            return True  # unknown: a network outage must never make a run lost
        if known:
            conn.seen_alive[run_id] = time.monotonic()
        else:
            conn.seen_alive.pop(run_id, None)
        return known

    def request_cancel(self, run_id: str) -> None:
        self.conn.call(lambda sftp: _put(sftp, b"", self._remote(run_id, protocol.CANCEL),
                                         atomic=False))
        ident = self._read_status(run_id).get("agent")
        if ident and self.conn.process_alive(ident):  # wake it now, not at its next poll
            self._signal(int(ident["pid"]), "SIGTERM")

    def abandon(self, run_id: str, status: dict[str, Any]) -> None:
        script = status.get("script")
        try:
            if script and self.conn.process_alive(script):
                self._signal(int(script["pid"]), "SIGKILL", group=True)
        except HostUnreachableError:
            pass
        try:
            self._finish(run_id)
        except HostUnreachableError:
            pass

    def outputs_dir(self, run_id: str) -> Path:
        """The local copy of the run's ``outputs/``, fetched from the host first."""
        local = self.workspace.run_dir(run_id)
        if not (local / FETCHED).exists():
            self._read_status(run_id)  # a run that has ended is fetched whole here
            if not (local / FETCHED).exists():
                try:
                    self._fetch_outputs(run_id)  # still running: what is there so far
                except HostUnreachableError:
                    pass
        return local / protocol.OUTPUTS

    # -- the local mirror --------------------------------------------------------------

    def _pull(self, run_id: str, name: str, offset: int) -> bytes:
        """Bytes of append-only ``name`` from ``offset``, appended to the local mirror.

        The host is read from where the mirror ends (or from ``offset`` if earlier), so
        the mirror is always a gap-free prefix of the host's file.
        """
        path = self.workspace.run_dir(run_id) / name
        start = min(offset, _size(path))
        data = self.conn.call(lambda sftp: read_file(sftp, self._remote(run_id, name), start))
        _append_local(path, start, data)
        return data[offset - start:]

    def _mirror_status(self, run_id: str, data: bytes) -> None:
        path = self.workspace.run_dir(run_id) / protocol.STATUS
        try:
            same = path.read_bytes() == data
        except FileNotFoundError:
            same = False
        if not same:
            _write_local(path, data)
        try:
            ended = RunStatus(json.loads(data)["status"]).is_terminal()
        except (ValueError, KeyError, TypeError):
            return
        if ended:
            try:
                self._finish(run_id)
            except HostUnreachableError:
                pass  # fetched on a later read

    _finishing = threading.Lock()

    def _finish(self, run_id: str) -> None:
        """Fetch the rest of the log and metrics, and the outputs, of a run that ended."""
        local = self.workspace.run_dir(run_id)
        with self._finishing:
            if (local / FETCHED).exists():
                return
            for name in _APPENDED:
                self._pull(run_id, name, _size(local / name))
            self._fetch_outputs(run_id)
            (local / FETCHED).touch()
        self.conn.seen_alive.pop(run_id, None)

    def _fetch_outputs(self, run_id: str) -> None:
        remote = self._remote(run_id, protocol.OUTPUTS)
        local = self.workspace.run_dir(run_id) / protocol.OUTPUTS
        self.conn.call(lambda sftp: _get_tree(sftp, remote, local))

    def _inspect(self, run_id: str, snap: Snapshot) -> tuple[list[str], bool]:
        """Make the run folder; which blobs and whether the runtime the host lacks.

        Asks the host about the digests this connection does not know it has; when
        it knows them all (a resubmit), one SFTP mkdir is all it costs.
        """
        conn = self.conn
        run = posixpath.join("runs", run_id)
        unknown = sorted({d for d, _size, _mode in snap.files.values()} - conn.blobs)
        if unknown or runtime_digest() not in conn.runtimes or conn.probe is None:
            return conn.inspect(unknown, run, posixpath.join("runtime", runtime_digest()))
        conn.call(lambda sftp: _mkdir(sftp, self._remote(run_id)))
        return [], False

    def _signal(self, pid: int, name: str, group: bool = False) -> None:
        """Send signal ``name`` to ``pid`` (or its process group) on the host, if it lives.

        Through Python, not ``kill``: dash's ``kill`` takes no negative (group) pids.
        """
        probe = self.conn.ensure()
        call = "os.killpg" if group else "os.kill"
        code = (f"import os, signal\ntry:\n    {call}({int(pid)}, signal.{name})\n"
                "except OSError:\n    pass\n")
        self.conn.run(python_command(probe.python, code))

    def _checked(self, command: str, what: str, stdin: bytes = b"") -> bytes:
        code, out, err = self.conn.run(command, stdin)
        if code:
            raise RemoteCommandError(code, f"{what} on {self.conn.endpoint.label}",
                                     err.decode(errors="replace"))
        return out


# -- SFTP helpers ------------------------------------------------------------------------


def _put(sftp: paramiko.SFTPClient, src: bytes | Path, dest: str, atomic: bool = True) -> int:
    """Upload ``src`` (bytes or a local file) to ``dest``; return the bytes sent.

    ``atomic`` writes a temporary name first and renames it, so a reader (or a
    concurrent upload of the same blob) never sees half a file.
    """
    tmp = f"{dest}.tmp-{os.getpid()}-{os.urandom(4).hex()}" if atomic else dest
    if isinstance(src, bytes):
        with sftp.open(tmp, "wb") as f:
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


def _mkdir(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.mkdir(path)
    except OSError:
        if not stat.S_ISDIR(sftp.stat(path).st_mode or 0):
            raise


def _mtime(sftp: paramiko.SFTPClient, path: str) -> float | None:
    try:
        return sftp.stat(path).st_mtime
    except FileNotFoundError:
        return None


def _get_tree(sftp: paramiko.SFTPClient, remote: str, local: Path) -> None:
    """Download the regular files under ``remote`` into ``local``; skip unchanged ones."""
    try:
        entries = sftp.listdir_attr(remote)
    except FileNotFoundError:
        return
    local.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        mode = entry.st_mode or 0
        src, dest = posixpath.join(remote, entry.filename), local / entry.filename
        if stat.S_ISDIR(mode):
            _get_tree(sftp, src, dest)
        elif stat.S_ISREG(mode):  # links and devices are not artifacts
            try:
                st = dest.stat()
                if st.st_size == entry.st_size and int(st.st_mtime) == entry.st_mtime:
                    continue
            except FileNotFoundError:
                pass
            tmp = dest.with_name(f".{entry.filename}.{os.getpid()}.part")
            try:
                sftp.get(src, str(tmp))
            except PermissionError:  # the script made it unreadable: not an artifact
                continue
            os.utime(tmp, (entry.st_atime or 0, entry.st_mtime or 0))
            os.replace(tmp, dest)


# -- local files -------------------------------------------------------------------------


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


def _write_local(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _timestamp(iso: str | None) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp() if iso else time.time()


def _age(iso: str | None) -> float:
    return time.time() - _timestamp(iso)
