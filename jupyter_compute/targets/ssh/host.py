"""An SSH host: run folders on a machine reached over SSH (paramiko, one pooled connection).

Everything lives under ``workdir`` there (default ``~/.jupyter_compute``)::

    blobs/sha256/ab/<digest>           content-addressed files, shared by all runs
    runtime/<digest>/jupyter_compute/  the agent and tracking API, once per version
    runs/<run-id>/                     the run folder (see protocol.py), 0700
    envs/<hash>/                       venvs built from requirements files, reused

Everything goes through the connection's one helper session (``session``, the
runtime's ``hostsession`` on the host, started while a first submit hashes its
files). ``sync`` is one streamed request to it: only the blobs the host lacks (its
answer overlapping the upload), the runtime if missing, the manifest, the run's
files and the agent's start; the host checks each blob's sha256 before it renames
it into place. Status, cancel, process checks and outputs are requests too; a
followed run's log, metrics and status are pushed as they change, so nothing is
polled over the network. The agent starts
detached (setsid, nohup), so a dropped connection or a closed kernel does not stop
the run. What arrives is kept in the workspace's run folder, so ``logs``,
``metrics`` and ``show`` work while the host is unreachable, and a follower resumes
at its byte offset after a reconnect. When the run ends (``finish``), its
``outputs/`` are fetched there, under names checked on this side: the host is not
trusted to name files on this machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shlex
import threading
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path

import jupyter_compute.targets.ssh.session as session_mod
import jupyter_compute.targets.ssh.sshconfig as sshconfig
import jupyter_compute.targets.ssh.transfer as transfer
from jupyter_compute import protocol
from jupyter_compute.exceptions import TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.targets.base import AGENT_STARTED, Host
from jupyter_compute.targets.runtime import runtime_digest, runtime_files
from jupyter_compute.targets.ssh.connection import (
    CALL_TIMEOUT,
    Connection,
    HostUnreachableError,
    connection,
)
from jupyter_compute.targets.ssh.hostkeys import KNOWN_HOSTS
from jupyter_compute.targets.ssh.options import (
    DEFAULT_PYTHON,
    DEFAULT_TIMEOUT,
    DEFAULT_WORKDIR,
    HOST_OPTIONS,
)
from jupyter_compute.targets.ssh.session import append_local, read_local
from jupyter_compute.targets.ssh.transfer import safe_name

__all__ = ["SSHHost", "SyncStats", "safe_name"]

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from jupyter_compute.snapshot import Snapshot
    from jupyter_compute.targets.base import SubmitContext

#: In the local run folder: what ``sync`` sent (``SyncStats`` as JSON).
SYNC_RECORD = "sync.json"
#: In the local run folder: the final log, metrics, status and outputs are all here.
FETCHED = ".fetched"
#: ``ctx.scratch`` key: what the host lacks, learnt by ``paths`` on a new connection.
SCRATCH_MISSING = "ssh.missing"
_APPENDED = (protocol.LOG, protocol.METRICS)
_MIRRORED = (*_APPENDED, protocol.STATUS)
#: A process no watched run names is looked up in the host's /proc at most this often.
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

    stores_blobs = False  # new files are sent from the source folder (the host checks them)
    #: Whether ``sync`` may start the agent in the same request (a batch queue starts it).
    starts_agent_with_sync: ClassVar[bool] = True

    options = HOST_OPTIONS

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

    @property
    def session(self) -> session_mod.Session:
        """The connection's helper session: run files pushed, requests answered."""
        return session_mod.session(self.conn)

    def remote(self, run_id: str, *names: str) -> str:
        """The absolute path of the run folder (or a file in it) on the host."""
        return posixpath.join(self.conn.ensure().workdir, "runs", run_id, *names)

    # -- Host ----------------------------------------------------------------------------

    def check(self) -> None:
        """Connect once: host key, credentials, Python ≥ 3.9 and the workdir."""
        self.conn.ensure(force=True)

    def warm_up(self) -> None:
        """Connect, probe and start the helper session on a thread: a first submit's
        snapshot (hashing every file) and its handshake then overlap."""
        conn = self.conn
        if conn.connected and self.session.live:
            return
        with conn.lock:
            if conn.warming is not None:
                return
            failed: list[BaseException] = []
            thread = threading.Thread(target=self._warm_up, args=(failed,), daemon=True,
                                      name="ssh-warm-up")
            thread.start()  # before it is seen: a concurrent submit's prepare joins it
            conn.warming = (thread, failed)

    def _warm_up(self, failed: list[BaseException]) -> None:
        try:
            self.conn.connect(force=True)
            # the helper starts while the probe runs: neither needs the other
            helper = threading.Thread(target=self.session.ensure_quietly, daemon=True,
                                      name="ssh-session-start")
            helper.start()
            self.conn.ensure(force=True)
            helper.join()
            self.session.ensure()  # its error, if it failed
        except BaseException as exc:  # noqa: BLE001 - prepare raises it
            failed.append(exc)

    def prepare(self) -> None:
        conn = self.conn
        warming = conn.warming
        if warming is not None:  # what the warm-up found: no second wait on a dead host
            warming[0].join()
            conn.warming = None
            if warming[1] and not conn.connected:
                raise warming[1][0]
        conn.connect(force=True)  # a person is waiting: try now, whatever the backoff
        self.session.start_soon()  # ready by the launch: sync goes on meanwhile

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
        """A watched run's log, metrics and status are read here, where the session
        pushes them; other files are asked for (one round trip)."""
        local = self.workspace.run_dir(run_id)
        if name in _MIRRORED and (local / FETCHED).exists():
            return read_local(local / name, offset)  # final: no need to ask the host
        try:
            if name in _MIRRORED:
                self.session.watch(run_id, local)
                return read_local(local / name, offset)
            return self.session.request("read", {"run": run_id, "name": name,
                                                 "offset": offset})[1]
        except HostUnreachableError:
            return read_local(local / name, offset)  # what was last fetched

    def write(self, run_id: str, name: str, data: bytes) -> None:
        self.session.request("write", {"run": run_id, "name": name, "mode": 0o600}, data)
        if name != protocol.SECRETS:  # the values rest nowhere but where the agent reads them
            protocol.write_atomic(str(self.workspace.run_dir(run_id) / name), data, 0o600)

    def start_agent(self, run_id: str, python: str | None = None) -> None:
        """Through the session: the agent in a session of its own (it outlives the
        helper and the connection), and the run watched from then on."""
        watch = self.session.watch_later(run_id, self.workspace.run_dir(run_id))
        try:
            self.session.request("start", {"run": run_id, "runtime": runtime_digest(),
                                           "python": python, "watch": watch})
        except Exception:
            self.session.forget(run_id)
            raise
        self.session.watch_started(run_id)

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 60
            ) -> tuple[int, bytes, bytes]:
        """Run ``argv`` on the host, every argument quoted for its shell."""
        return self.conn.run(" ".join(shlex.quote(str(a)) for a in argv), stdin, timeout)

    def process_alive(self, ident: dict[str, Any]) -> bool | None:
        pushed = self.session.liveness(ident)  # a watched run's agent: no round trip
        if pushed is not None:
            return pushed[1]
        conn = self.conn
        key = f"{ident.get('host')}:{ident.get('pid')}:{ident.get('start_ticks')}"
        seen = conn.seen_alive.get(key)
        if seen is not None and time.monotonic() - seen < ALIVE_RECHECK_SECONDS:
            return True
        try:
            known = self.session.request("alive", {"ident": ident})[0]["alive"]
        except HostUnreachableError:
            return True  # unknown: a network outage must never make a run lost
        if known:
            conn.seen_alive[key] = time.monotonic()
        else:
            conn.seen_alive.pop(key, None)
        return bool(known) if known is not None else None

    def heartbeat_age(self, run_id: str) -> float | None:
        """By the host's clock: pushed when it goes stale for a watched run, else asked."""
        watch = self.session.watched(run_id)
        if watch is not None:
            return watch.beat if watch.stale else 0.0
        try:
            age = self.session.request("beat", {"run": run_id})[0]["age"]
        except HostUnreachableError:
            return 0.0  # unknown: a network outage must never make a run lost
        return None if age is None else float(age)

    def signal(self, ident: dict[str, Any], name: str, group: bool = False) -> None:
        """If ``ident`` lives on the host (the helper checks): ``kill`` or ``killpg``."""
        if name.isidentifier():
            self.session.request("signal", {"ident": ident, "signal": name, "group": group})

    def change_count(self, run_id: str) -> int:
        return self.session.change_count(run_id)

    def wait_change(self, run_id: str, since: int, timeout: float) -> None:
        self.session.wait_change(run_id, since, timeout)

    def finish(self, run_id: str) -> None:
        """Complete the log and metrics, and fetch the outputs, of a run that ended."""
        local = self.workspace.run_dir(run_id)
        if (local / FETCHED).exists():
            return
        try:
            with self._finishing:
                if (local / FETCHED).exists():
                    return
                watch = self.session.watch(run_id, local)
                if not watch.final:  # ended by a reader here: its last bytes are asked for
                    for name in _APPENDED:
                        self._pull(run_id, name)
                self._fetch_outputs(run_id)
                (local / FETCHED).touch()
                self.session.forget(run_id)
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
        """One streamed request to the helper session: the blobs the host lacks, the
        runtime if it lacks it, the manifest (whole, or as a change of the last one it
        has), the run's files and, unless a container or secrets come next, the agent's
        start. One round trip in all when what the host lacks is known.

        When it is not (a new connection), ``have`` asks first and the stream does not
        wait for its answer: the blobs the host is unlikely to have (new to this
        workspace's blob store, read from the source folder, and not in the last
        snapshot synced to this target) go out first, unasked, until the answer
        arrives or ``transfer.SPECULATE`` bytes went; the others wait for it. So a
        first submit costs no round trip more, a resubmit from a new process sends
        only what changed, and the host drops the few it had. A second attempt (after
        a drop) sends nothing unasked: the host has much of it by then.
        """
        from jupyter_compute.runspec import secret_names
        from jupyter_compute.snapshot import BlobStore

        conn, sess, snap, run_id = self.conn, self.session, ctx.snap, ctx.run_id
        conn.ensure()
        sizes = _needed_blobs(ctx, self.workspace.blobs_dir)
        version = runtime_digest()
        unknown = [d for d in sorted(sizes) if d not in conn.blobs]
        known = ctx.scratch.pop(SCRATCH_MISSING, None)
        if known is not None and not known[3].issuperset(unknown):
            known = None  # wheels were added after the probe (an environment): ask again
        asked = None
        likely: set[str] = set()
        if known is not None:  # the probe said what is missing
            send, runtime = known[0], known[1]
        elif version in conn.runtimes and sum(sizes[d] for d in unknown) <= \
                transfer.SEND_UNASKED:
            send, runtime = unknown, False  # cheaper to send them than to ask
        else:
            asked = sess.ask("have", {"runtime": version}, "\n".join(unknown).encode())
            before = self._synced_before(ctx)
            likely = {d for d in unknown if d not in snap.sources or d in before}
            send = [d for d in unknown if d not in likely] + \
                [d for d in unknown if d in likely]
            runtime = None
        stats.blobs_checked = len(unknown) if known is None else known[2]
        store = BlobStore(self.workspace.blobs_dir)
        manifest = json.loads(Path(snap.manifest_path).read_bytes())
        spec = json.dumps(ctx.agent, indent=1).encode()
        status = (self.workspace.run_dir(run_id) / protocol.STATUS).read_bytes()
        whole = conn.manifest is None
        waited: list[bool] = []

        def missing() -> tuple[set[str], bool]:
            assert asked is not None
            if not asked.answered():
                waited.append(True)  # the whole stream went out before the answer
            answer = sess.answer(asked, timeout=max(CALL_TIMEOUT, 60.0))[0]
            return set(answer["missing"]), bool(answer["runtime"])

        def produce(write: Any) -> None:
            writer = transfer.FrameWriter(write)
            lacking: set[str] | None = None
            ship_runtime = runtime
            unasked = transfer.SPECULATE if stats.attempts == 1 else 0
            for digest in send:
                if lacking is None and asked is not None and (
                        asked.answered() or digest in likely or writer.sent >= unasked):
                    lacking, ship_runtime = missing()
                if lacking is not None and digest not in lacking:
                    continue
                try:
                    stats.blob_bytes += writer.blob(digest, _blob(snap, store, digest))
                except FileNotFoundError:
                    names = sorted(n for n, (d, _size, _mode) in snap.files.items()
                                   if d == digest)
                    raise TargetError(f"{', '.join(names) or 'a file'} was deleted while it "
                                      "was being submitted; submit again") from None
                stats.blobs_sent += 1
            if ship_runtime is None:
                ship_runtime = missing()[1]
            if ship_runtime:  # in order, __init__.py last: it marks the runtime complete
                for name, data in runtime_files().items():
                    writer.frame(f"R {name}", *transfer.pack(data))
                    stats.runtime_bytes += len(data)
            stats.manifest_bytes = _manifest_frame(writer, manifest, None if whole else
                                                   conn.manifest)[1]
            for name, data in ((protocol.SPEC, spec), (protocol.STATUS, status)):
                mode = 0o600 if name in _PRIVATE else 0o644
                writer.frame(f"F {name} {mode:o}", *transfer.pack(data))
            writer.write(b"E\n")
            writer.flush()
            stats.sent_bytes = writer.sent

        meta: dict[str, Any] = {"run": run_id, "runtime": version}
        start = self.starts_agent_with_sync and not ctx.agent.get("container") and \
            not secret_names(ctx.spec)
        if start:  # else the launcher starts it, after the secrets are there
            meta["start"] = {"python": None,
                             "watch": sess.watch_later(run_id, self.workspace.run_dir(run_id))}
        try:
            sess.stream("sync", meta, produce, timeout=max(CALL_TIMEOUT, 60.0))
        except session_mod.SessionError as exc:
            words = str(exc).split()
            if not whole and ("NoBase:" in words or "manifest" in words):
                conn.manifest = None  # the host lacks that manifest: send it whole
                # the blobs and the runtime arrived before the manifest's frame
                ctx.scratch[SCRATCH_MISSING] = ([], False, len(unknown), set(unknown))
                stats.blob_bytes = stats.blobs_sent = stats.runtime_bytes = 0
                return self._sync(ctx, stats)
            sess.forget(run_id)
            if "corrupt" in words:
                said = [b"ERR", b"corrupt", words[words.index("corrupt") + 1].encode()]
                raise self._refused(said, snap, store) from None
            raise
        except BaseException:
            sess.forget(run_id)
            raise
        if start:
            ctx.scratch[AGENT_STARTED] = True
            sess.watch_started(run_id)
        conn.blobs.update(sizes)
        conn.runtimes.add(version)
        conn.manifest = (_manifest_digest(manifest), manifest["files"])
        stats.round_trips = 1 + len(waited)
        stats.channels = 0
        stats.run_bytes = len(spec) + len(status)

    def _synced_before(self, ctx: SubmitContext) -> set[str]:
        """The files of the last snapshot synced to this target from this workspace: what
        its host most likely has. Empty if none is found."""
        from jupyter_compute.snapshot import SnapshotError, load_manifest

        for record in self.workspace.store.list(limit=20):
            if record.id == ctx.run_id or record.target != self.name or not (
                    self.workspace.run_dir(record.id) / SYNC_RECORD).exists():
                continue
            try:
                files = load_manifest(self.workspace.dir, record.snapshot["id"])["files"]
            except (SnapshotError, KeyError, TypeError, ValueError):
                return set()
            return {entry[0] for entry in files.values()}
        return set()

    def _refused(self, said: list[bytes], snap: Snapshot, store: Any) -> Exception:
        words = [w.decode(errors="replace") for w in said]
        if words[:2] == ["ERR", "corrupt"] and len(words) > 2:
            digest = words[2]
            names = sorted(n for n, (d, _size, _mode) in snap.files.items() if d == digest)
            if digest in snap.sources:  # read from the source folder: it changed since
                return transfer.CorruptBlobError(
                    f"{', '.join(names) or 'a file'} changed while it was being submitted "
                    f"(its bytes no longer match the snapshot's hash, so {self.label} "
                    "refused them); submit again")
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

    def _pull(self, run_id: str, name: str) -> None:
        """Append to the local mirror of ``name`` what the host has beyond it."""
        path = self.workspace.run_dir(run_id) / name
        start = _size(path)
        data = self.session.request("read", {"run": run_id, "name": name, "offset": start})[1]
        append_local(path, start, data)

    def _fetch_outputs(self, run_id: str) -> list[str]:
        """The run's new or changed ``outputs/`` files, in one answer of the session."""
        local = self.workspace.run_dir(run_id) / protocol.OUTPUTS
        if os.path.islink(local):
            return []  # never written through
        data = self.session.request("outputs", {"run": run_id,
                                                "have": transfer.local_index(local)},
                                    timeout=max(CALL_TIMEOUT, 120.0))[1]
        return transfer.receive_outputs(io.BytesIO(data), local)


def _blob(snap: Snapshot, store: Any, digest: str) -> Path | bytes:
    """Blob ``digest``: its bytes if the snapshot kept them, else where to read it from:
    the source file the snapshot hashed it from, if it did not store it
    (``Host.stores_blobs``), else the workspace's blob store."""
    kept = snap.contents.get(digest)
    if kept is not None:
        return kept
    source = snap.sources.get(digest)
    return Path(source) if source is not None else Path(store.path(digest))


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



def _canonical(manifest: dict[str, Any]) -> bytes:
    """The manifest's bytes as the host rebuilds them from a change (``apply_manifest``)."""
    return json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()


def _manifest_digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(manifest)).hexdigest()


def _manifest_frame(writer: transfer.FrameWriter, manifest: dict[str, Any],
                    base: tuple[str, dict[str, Any]] | None) -> tuple[str, int]:
    """Frame ``manifest`` for the session's sync: whole (``K``, a blob that is also the
    run's manifest) or, where the host has ``base`` (its digest and files), as the
    entries that changed (``D``); the host checks the result against the digest.
    Returns the manifest's digest and the bytes framed."""
    canonical = _canonical(manifest)
    digest = hashlib.sha256(canonical).hexdigest()
    if base is None:
        data, z = transfer.pack(canonical)
        writer.frame(f"K {digest}", data, z)
        return digest, len(data)
    files, old = manifest["files"], base[1]
    patch = {"set": {p: e for p, e in files.items() if old.get(p) != e},
             "drop": [p for p in old if p not in files],
             "head": {k: v for k, v in manifest.items() if k != "files"}}
    data, z = transfer.pack(json.dumps(patch, separators=(",", ":")).encode())
    writer.frame(f"D {digest} {base[0]}", data, z)
    return digest, len(data)


# -- local files -------------------------------------------------------------------------


def _terminal(raw: bytes) -> bool:
    try:
        return RunStatus(json.loads(raw)["status"]).is_terminal()
    except (ValueError, KeyError, TypeError):
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
