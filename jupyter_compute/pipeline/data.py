"""Data between steps: an output folder becomes a manifest of blobs, and back.

A step's output ``O`` is the folder ``outputs/O`` of its run. When the step
ends, the controller puts that folder's files into the workspace's blob store and
keeps their manifest (``{path: [sha256, size, mode]}``, the snapshot's format).
A dependent step gets those files in its own snapshot, at ``inputs/NAME/``: the
target's sync sends only the blobs it lacks, so a docker step feeds a local one,
an SSH step a Ray one, with nothing copied twice.

::

    files = harvest(run_outputs / "model", store)        # {"model.txt": [sha, 12, 0o644]}
    placed = place("data", files, into)                   # "inputs/data"
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from jupyter_compute.blobstore import BlobStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Manifest = dict  # path (posix, relative) → [sha256, size, mode]
#: The file that makes an output's folder exist before the step runs (a command's
#: ``> ${{outputs.o}}/x`` needs the folder); never part of the output itself.
MARKER = ".pipeline-output"
INPUTS, OUTPUTS = "inputs", "outputs"


def harvest(folder: Path, store: BlobStore) -> dict[str, list[Any]]:
    """Store every file under ``folder`` (links not followed) and return its manifest."""
    files: dict[str, list[Any]] = {}
    if not folder.is_dir():
        return files
    root = str(folder)
    for base, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(base, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            if rel == MARKER:
                continue
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            digest, size, _new = store.put_file(path, st.st_size)
            files[rel] = [digest, size, stat.S_IMODE(st.st_mode) | stat.S_IFREG]
    return files


def from_path(path: Path, store: BlobStore) -> tuple[dict[str, list[Any]], str | None]:
    """A workspace file or folder as a manifest, and the file's name (None: a folder)."""
    if path.is_dir():
        return harvest(path, store), None
    st = path.stat()
    digest, size, _new = store.put_file(str(path), st.st_size)
    return {path.name: [digest, size, stat.S_IMODE(st.st_mode) | stat.S_IFREG]}, path.name


def digest(files: dict[str, list[Any]]) -> str:
    """One sha256 for a manifest: equal exactly when the files are."""
    text = json.dumps(sorted((rel, entry[0], entry[2]) for rel, entry in files.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def missing(files: dict[str, list[Any]], store: BlobStore) -> list[str]:
    """The paths whose blobs the store no longer has."""
    return [rel for rel, entry in files.items() if not store.has(entry[0])]


def place_inputs(placed: dict[str, dict[str, list[Any]]], blobs: str, folder: Path) -> None:
    """Put each input's files at its path under ``folder`` (a step's materialized code),
    hard-linked from the blob store where it can (no copy, no memory held), and make
    the folder's snapshot take every file: the code there was filtered by its ignore
    rules already, and an input is never dropped by a rule like ``*.csv``."""
    from jupyter_compute.agent import materialize

    for where, files in placed.items():
        dest = folder / where
        dest.mkdir(parents=True, exist_ok=True)
        materialize(files, blobs, str(dest), place=_link_or_copy)
        if not files:  # an empty output is still a folder the step may list
            (dest / MARKER).touch()
    if placed:
        # The first ignore file found at the root replaces .gitignore at every level.
        (folder / IGNORE_ALL_BUT_ITSELF[0]).write_text(IGNORE_ALL_BUT_ITSELF[1])


#: A ``.computeignore`` that ignores only itself.
IGNORE_ALL_BUT_ITSELF = (".computeignore", "/.computeignore\n")


def _link_or_copy(blob: str, target: str, mode: int) -> None:
    try:
        os.link(blob, target)
    except OSError:  # another filesystem, or links refused: a copy
        shutil.copyfile(blob, target)
        os.chmod(target, mode)
