"""What a docker run mounts: its run folder, the runtime, and its snapshot, materialized once.

Inside the container::

    /jc/run           the run folder <ws>/runs/<id> (read-write): log, status, outputs
    /jc/run/workdir   the snapshot, the script's working folder: an overlay whose
                      read-only lower layer is the snapshot materialized once on the
                      host and whose upper layer is <run>/.docker/upper
    /jc/runtime       agent, tracking, protocol (read-only), on PYTHONPATH

Where the engine cannot mount an overlay volume, the blob store (``/jc/blobs``) and
the manifest (``/jc/manifest.json``) are mounted read-only instead and the agent
copies the snapshot into the run folder, as on the local target.

A snapshot is materialized on the host once per snapshot id, and every run of it
mounts that folder as the read-only lower layer of an overlay whose upper layer is
the run's own folder. The script sees an ordinary writable working folder, a run
copies nothing, and nothing a script does can reach the snapshot or the blob store::

    <ws>/docker/snapshots/<id>/      the snapshot's files: hard links to the blobs
                                     (no data copied), plus ``outputs -> ../outputs``
    <ws>/docker/files/<sha>.<mode>   a blob whose file needs another mode (an
                                     executable script): copied once, then linked
    <ws>/runtime/<digest>/           agent, tracking, protocol (``runtime.install_runtime``)
    <ws>/runs/<id>/.docker/upper     what the run's script wrote into its workdir

Every folder is built under a temporary name and renamed into place, so parallel
submits never see half a snapshot.

Example::

    >>> lower = materialize_snapshot(ws.dir, snap.id, snap.files)
    >>> sorted(p.name for p in lower.iterdir())
    ['outputs', 'train.py']
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.agent import materialize
from jupyter_compute.targets.runtime import install_runtime

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

#: Paths inside the container.
RUN_DIR, RUNTIME_DIR = "/jc/run", "/jc/runtime"
BLOBS_DIR, MANIFEST = "/jc/blobs", "/jc/manifest.json"
#: The kind's own files in the run folder: container.json, manifest.json, upper/, …
STATE = ".docker"

#: Errors after which a hard link is impossible here and a copy is made instead.
_NO_LINK = frozenset({errno.EXDEV, errno.EMLINK, errno.EPERM, errno.EACCES,
                      getattr(errno, "ENOTSUP", errno.EPERM)})


def materialize_snapshot(workspace_dir: Path, snapshot_id: str,
                         files: Mapping[str, Sequence[Any]]) -> Path:
    """The folder holding snapshot ``snapshot_id``'s files; built on first use.

    ``files`` is the manifest's ``path -> (sha256, size, mode)``. Files are hard
    links into the blob store (the folder is only ever mounted read-only), so a
    new snapshot costs directory entries, not data.
    """
    root = workspace_dir / "docker" / "snapshots"
    final = root / snapshot_id
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{snapshot_id[:12]}-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        moded = workspace_dir / "docker" / "files"
        os.makedirs(tmp)
        materialize(files, str(workspace_dir / "blobs"), str(tmp),
                    place=lambda blob, target, mode: _link_or_copy(Path(blob), target, mode,
                                                                   moded))
        link = tmp / protocol.OUTPUTS
        if not os.path.lexists(link):  # the agent finds it there and keeps it
            os.symlink(os.path.join("..", protocol.OUTPUTS), link)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not "another process was first"
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def prepare_run_folder(run_dir: Path) -> None:
    """Make the overlay's upper and work folders and the mount point (ours, not the
    engine's root), and an empty manifest: with the snapshot mounted, the agent copies
    nothing."""
    for sub in (f"{STATE}/upper", f"{STATE}/work", protocol.WORKDIR):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    protocol.write_json_atomic(str(run_dir / STATE / "manifest.json"), {"files": {}}, 0o600)


def overlay_fits(run_dir: Path, lower: Path) -> bool:
    """Whether these paths can go into overlay options (``key=a:b,key=…``)."""
    return not re.search(r"[,:]", f"{run_dir}{lower}")


def run_mounts(workspace_dir: Path, run_dir: Path, lower: Path, manifest: Path,
               overlay: bool) -> list[Any]:
    """The docker SDK ``Mount`` list of one run: the run folder, the runtime, and the
    snapshot as an overlay on ``lower`` (or, without ``overlay``, the blob store and
    ``manifest`` for the agent to copy from)."""
    from docker.types import DriverConfig, Mount

    mounts = [Mount(RUN_DIR, str(run_dir), type="bind"),
              Mount(RUNTIME_DIR, str(install_runtime(workspace_dir)), type="bind",
                    read_only=True)]
    if overlay:
        state = run_dir / STATE
        opts = f"lowerdir={lower},upperdir={state / 'upper'},workdir={state / 'work'}"
        mounts.append(Mount(f"{RUN_DIR}/{protocol.WORKDIR}", "", type="volume", no_copy=True,
                            driver_config=DriverConfig("local", {
                                "type": "overlay", "device": "overlay", "o": opts})))
    else:
        mounts += [Mount(BLOBS_DIR, str(workspace_dir / "blobs"), type="bind", read_only=True),
                   Mount(MANIFEST, str(manifest), type="bind", read_only=True)]
    return mounts


def _link_or_copy(blob: Path, target: str, mode: int, moded: Path) -> None:
    source = blob
    if os.stat(blob).st_mode & 0o777 != mode:
        # A link shares the blob's mode; a file that needs another one links to a
        # copy with that mode, made once per (content, mode).
        source = moded / f"{blob.name}.{mode:o}"
        if not source.exists():
            moded.mkdir(parents=True, exist_ok=True)
            tmp = moded / f".tmp-{os.getpid()}-{os.urandom(4).hex()}"
            shutil.copyfile(blob, tmp)
            os.chmod(tmp, mode)
            os.replace(tmp, source)
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        shutil.copyfile(source, target)
        os.chmod(target, mode)


