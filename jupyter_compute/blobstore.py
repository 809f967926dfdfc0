"""The content-addressed blob store: each file's exact bytes, once, under its sha256.

Writes go to a unique temporary name and are moved into place with ``os.replace``,
so many processes can share one store and a reader never sees half a blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from pathlib import Path

__all__ = ["WHOLE_FILE_BYTES", "BlobStore", "hash_file"]

# Files up to this size are read whole (hash and blob from one buffer); larger ones
# are streamed to a temporary blob while hashing.
WHOLE_FILE_BYTES = 8 * 1024 * 1024
_CHUNK = 1024 * 1024


class BlobStore:
    """Content-addressed files under ``root/sha256/ab/<digest>``, shared by all snapshots.

    Example::

        >>> store = BlobStore(".jupyter_compute/blobs")
        >>> store.has(snap.files["train.py"][0])
        True
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._base = os.path.join(os.fspath(root), "sha256")
        self._made: set[str] = set()  # folders known to exist, each made on first use

    def path(self, digest: str) -> Path:
        """Where the blob for ``digest`` lives (whether or not it exists)."""
        return Path(self._file(digest))

    def has(self, digest: str) -> bool:
        """True when the blob for ``digest`` is stored."""
        return os.path.exists(self._file(digest))

    def put_bytes(self, data: bytes, digest: str) -> bool:
        """Store ``data`` (whose sha256 is ``digest``); True when it was not there before."""
        final = self._file(digest)
        if os.path.exists(final):
            return False
        tmp = self._tmp(self._fanout(digest))
        # os-level calls: builtin open() adds fstat, isatty and lseek to every file
        fd = os.open(tmp, _WRITE_FLAGS, 0o644)
        try:
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return True

    def put_file(self, path: str, size: int) -> tuple[str, int, bool]:
        """Store the file at ``path`` from the very bytes hashed: (digest, size, new).

        ``size`` (from an earlier stat) sizes the read; a file that grew meanwhile is
        still stored whole.
        """
        fd = os.open(path, _READ_FLAGS)
        try:
            first = b""
            if size <= WHOLE_FILE_BYTES:
                # one read; a byte more than expected shows the file grew
                first = os.read(fd, size + 1)
                if len(first) <= size:
                    digest = hashlib.sha256(first).hexdigest()
                    return digest, len(first), self.put_bytes(first, digest)
            return self._put_stream(fd, first)
        finally:
            os.close(fd)

    def _put_stream(self, src: int, first: bytes) -> tuple[str, int, bool]:
        """Hash and store the rest of file descriptor ``src``, reading it once.

        Returns (digest, size, new). The blob is exactly the bytes hashed, even if the
        file changes meanwhile.
        """
        h = hashlib.sha256(first)
        size = len(first)
        tmp = self._tmp(self._dir(os.path.join(self.root, "tmp")))
        fd = os.open(tmp, _WRITE_FLAGS, 0o644)
        try:
            try:
                _write_all(fd, first)
                while chunk := os.read(src, _CHUNK):
                    h.update(chunk)
                    _write_all(fd, chunk)
                    size += len(chunk)
            finally:
                os.close(fd)
            digest = h.hexdigest()
            final = self._file(digest)
            if os.path.exists(final):
                return digest, size, False
            self._fanout(digest)
            os.replace(tmp, final)
            return digest, size, True
        finally:
            _unlink_quietly(tmp)

    def _file(self, digest: str) -> str:
        return f"{self._base}/{digest[:2]}/{digest}"

    def _fanout(self, digest: str) -> str:
        return self._dir(f"{self._base}/{digest[:2]}")

    def _tmp(self, where: str) -> str:
        # pid + per-process random token + counter: unique across threads, forks and
        # hosts sharing the store, without a syscall per name
        return f"{where}/.tmp-{os.getpid()}-{_TOKEN}-{next(_TMP_COUNTER)}"

    def _dir(self, path: str) -> str:
        if path not in self._made:
            os.makedirs(path, exist_ok=True)
            self._made.add(path)
        return path


_TOKEN = os.urandom(4).hex()
_TMP_COUNTER = itertools.count()
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def hash_file(path: str) -> tuple[str, int]:
    """``(sha256, size)`` of the file at ``path``, read in chunks; nothing is stored."""
    h = hashlib.sha256()
    size = 0
    fd = os.open(path, _READ_FLAGS)
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest(), size
