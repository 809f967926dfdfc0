"""The host folders a docker run mounts: its snapshot, materialized once, and the runtime.

A snapshot is materialized on the host once per snapshot id, and every run of it
mounts that folder as the read-only lower layer of an overlay whose upper layer is
the run's own folder. The script sees an ordinary writable working folder, a run
copies nothing, and nothing a script does can reach the snapshot or the blob store::

    <ws>/docker/snapshots/<id>/      the snapshot's files: hard links to the blobs
                                     (no data copied), plus ``outputs -> ../outputs``
    <ws>/docker/files/<sha>.<mode>   a blob whose file needs another mode (an
                                     executable script): copied once, then linked
    <ws>/runtime/<digest>/           agent, tracking, protocol (shared with local)
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
import shutil
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.agent import materialize
from jupyter_compute.targets.base import runtime_digest, runtime_files

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

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


def runtime_dir(workspace_dir: Path) -> Path:
    """The run-side runtime as a folder to put on ``PYTHONPATH``, written once per version.

    Example::

        >>> (runtime_dir(ws.dir) / "jupyter_compute" / "agent.py").is_file()
        True
    """
    folder = workspace_dir / "runtime" / runtime_digest()
    package = folder / "jupyter_compute"
    if (package / "__init__.py").exists():
        return folder
    package.mkdir(parents=True, exist_ok=True)
    # __init__.py last: its presence says the folder is complete (as targets/local.py).
    for name, data in sorted(runtime_files().items(), key=lambda kv: kv[0] == "__init__.py"):
        tmp = package / f".{name}.{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, package / name)
    return folder


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


