"""A Ray cluster that shares no filesystem with this machine, as a host: ``JobLogHost``.

The run's folder here is a mirror. ``sync`` uploads the run (the snapshot's blobs,
the runtime and ``joblog.py`` as the entry script) as the job's ``working_dir``
package, content-addressed, so an unchanged snapshot is uploaded once. On the node
the entry script writes the real run folder and prints what the agent writes into
the job's log; ``read`` rebuilds the mirror from that log (``joblog.Mirror``) before
it answers, so ``status.json``, ``output.log``, ``metrics.jsonl`` and ``outputs/``
here are the agent's own, never made up.

Limits of the path: Ray serves a job's log only whole, so each pull (at most every
``PULL_SECONDS`` per run and target object) fetches all of it; a log line shows
once it ends with a newline; outputs come back when the run ends, up to 64 MiB
compressed (larger ones stay on the node, and the log says where). Nothing on the
node is reached but through Ray: no commands, no signals (cancel is Ray's
``stop_job``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import TargetError
from jupyter_compute.targets.local import LocalHost
from jupyter_compute.targets.ray.jobs import TERMINAL, ClusterUnreachableError, JobNotFoundError
from jupyter_compute.targets.ray.submission import Clients, job_record
from jupyter_compute.targets.runtime import runtime_digest, runtime_files

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.snapshot import Snapshot
    from jupyter_compute.targets.base import SubmitContext
    from jupyter_compute.targets.ray.jobs import JobsClient
    from jupyter_compute.workspace import Workspace

#: The job log is fetched whole (Ray has no offsets): at most this often per run.
PULL_SECONDS = 0.1
#: ``ctx.scratch`` keys: the cluster's client (set by the launcher's ``sync``) and the
#: uploaded package's URI (set by this host's ``sync``, read by the launcher's ``launch``).
CLIENT, PACKAGE = "ray_client", "ray_package"
_PULLED = (protocol.STATUS, protocol.LOG, protocol.METRICS)


class JobLogHost(LocalHost):
    """Run folders on a Ray node, mirrored here from the job's log; see the module.

    The mirror is a local run folder, so reading and writing it is ``LocalHost``'s;
    what differs is how it gets there (``pull``) and that nothing runs here."""

    folders_here = False  # the mirror changes only when pulled
    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        super().__init__(name, config, workspace)
        self.clients = Clients(workspace, config)
        self._lock = threading.Lock()
        self._pulled: dict[str, float] = {}

    def paths(self, ctx: SubmitContext) -> dict[str, Any]:
        return {}  # the entry script on the node fills in where it unpacked the run

    def env_root(self) -> tuple[str, str] | None:
        return None  # on the cluster's nodes (Ray's runtime_env, or the node's own envs/)

    def sync(self, ctx: SubmitContext) -> None:
        protocol.write_json_atomic(os.path.join(self.run_dir(ctx.run_id), protocol.SPEC),
                                   ctx.agent, 0o600)
        ctx.scratch[PACKAGE] = upload_package(ctx.scratch[CLIENT], ctx.snap,
                                              self.workspace.blobs_dir)

    def read(self, run_id: str, name: str, offset: int = 0) -> bytes:
        if name in _PULLED:
            self.pull(run_id)
        return super().read(run_id, name, offset)

    # write: the mirror's file (LocalHost's); the node hears of a cancel through stop_job

    def start_agent(self, run_id: str, python: str | None = None) -> None:
        raise TargetError(f"target {self.name!r} starts agents only as Ray jobs")

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 60
            ) -> tuple[int, bytes, bytes]:
        raise TargetError(f"target {self.name!r} runs no commands on its nodes: it reaches "
                          "them through Ray jobs only")

    def heartbeat_age(self, run_id: str) -> float | None:
        return None  # the heartbeat file stays on the node; the job's state tells

    def signal(self, ident: dict[str, Any], name: str, group: bool = False) -> None:
        """Nothing: a node's processes are reached through Ray only (``stop_job``)."""

    def finish(self, run_id: str) -> None:
        self.pull(run_id, force=True)

    def outputs_dir(self, run_id: str) -> Path:
        self.pull(run_id, force=True)
        return super().outputs_dir(run_id)

    def pull(self, run_id: str, force: bool = False) -> None:
        """Bring the mirror up to date from the job's log (a job-log run's only)."""
        rec = job_record(self.workspace, run_id)
        if rec is None or rec.get("transport") != "job-log":
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._pulled.get(run_id, 0.0) < PULL_SECONDS:
                return
            self._pulled[run_id] = now
        import fcntl

        from jupyter_compute.targets.ray.joblog import Mirror

        run_dir = self.workspace.run_dir(run_id)
        with open(run_dir / ".joblog.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one feeder at a time, in any process
            mirror = Mirror(str(run_dir))
            if mirror.ended:
                with self._lock:
                    self._pulled.pop(run_id, None)
                return
            client = self.clients.for_record(rec)
            try:
                info = client.info(rec["submission_id"])
                text = client.logs(rec["submission_id"])
            except (JobNotFoundError, ClusterUnreachableError):
                return
            mirror.feed(text, final=info.get("status") in TERMINAL)


def upload_package(client: JobsClient, snap: Snapshot, blobs_dir: Path) -> str:
    """The snapshot, runtime and entry script as a ``working_dir`` package in the cluster
    (uploaded unless the cluster has it already); returns its ``gcs://`` URI."""
    import hashlib

    import jupyter_compute.targets.ray.joblog as joblog

    entry = Path(joblog.__file__).read_bytes()
    key = hashlib.sha256(f"{runtime_digest()}\0{snap.id}\0".encode() + entry).hexdigest()
    uri = f"gcs://_ray_pkg_{key[:32]}.zip"
    if not client.package_exists(uri):
        client.upload_package(uri, package_zip(snap, blobs_dir, entry))
    return uri


def package_zip(snap: Snapshot, blobs_dir: Path, entry: bytes) -> bytes:
    """A deterministic zip: runtime, entry script, the snapshot's manifest and blobs.

    Content-addressed and shared by every run of the snapshot: nothing of one run
    (its spec, its environment variables) ever goes in.
    """
    import io
    import zipfile

    from jupyter_compute.targets.ray.joblog import ENTRY

    files: dict[str, bytes] = {f"jupyter_compute/{n}": d for n, d in runtime_files().items()}
    files[ENTRY] = entry
    files["snapshot/manifest.json"] = Path(snap.manifest_path).read_bytes()
    for digest, _size, _mode in snap.files.values():
        name = f"snapshot/blobs/sha256/{digest[:2]}/{digest}"
        if name not in files:
            files[name] = (blobs_dir / "sha256" / digest[:2] / digest).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    return buf.getvalue()
