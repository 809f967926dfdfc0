"""Files to and from an SSH host in one stream each: a few round trips, not a few per file.

**Sync** is one streamed request to the host's helper session (``hostsession``:
``receive`` there reads the frames and says what each means). This side frames
what goes (``FrameWriter``): blobs, compressed with zlib when that pays, each
checked against its sha256 by the host before it is renamed into place, so a blob
is either whole and right or absent, and after a dropped connection a new sync
sends only the rest. ``SSHHost._sync`` decides which blobs go and when it asks.

**Outputs** come back in one answer of the helper session (``hostsession.send_outputs``
walks the run's ``outputs/``, regular files only, links never followed, skips the
files this side says it has, same size and mtime, and frames the others);
``receive_outputs`` checks every name before it writes anything.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import zlib
from pathlib import Path

from jupyter_compute.exceptions import TargetError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO

#: Blobs up to this size are read whole and compressed when it pays; larger ones stream raw.
WHOLE_BLOB = 8 * 1024 * 1024
#: Keep the compressed bytes only if they are at most this fraction of the original.
COMPRESS_KEEP = 0.9
#: Data smaller than this is sent as it is (a zlib header would eat the gain).
COMPRESS_MIN = 256
#: Blobs the host may lack, up to this many bytes in all, are sent without asking: at
#: 50 ms and 10 MB/s, a round trip costs as much time as 500 KB.
SEND_UNASKED = 256 * 1024
#: Before the host has said which blobs it lacks, at most this many bytes of them go
#: unasked (a first submit need not wait; what the host had is dropped there). Not a
#: round trip's worth: socket buffers and the SSH window take megabytes at once.
SPECULATE = 2 * 1024 * 1024
#: What the client writes to the channel at once.
SEND_BUFFER = 256 * 1024
_CHUNK = 1024 * 1024


class CorruptBlobError(TargetError):
    """A blob's bytes did not match its sha256 when they reached the host."""


# -- sync, the client's side -------------------------------------------------------------


def pack(data: bytes) -> tuple[bytes, bool]:
    """``data`` zlib-compressed if that saves at least a tenth, else as it is; and which.

    Data that looks random is sent as it is without trying: zlib gains nothing on it
    and, at level 1, is slowest on it (5 MB of random bytes took ~0.8 s, text ~0.1 s).

    >>> pack(b"a" * 1000)[1], pack(os.urandom(1000))[1]
    (True, False)
    """
    if len(data) < COMPRESS_MIN or looks_random(data):
        return data, False
    packed = zlib.compress(data, 1)
    if len(packed) <= COMPRESS_KEEP * len(data):
        return packed, True
    return data, False


def looks_random(data: bytes) -> bool:
    """Whether the first ``COMPRESS_MIN`` bytes use more than half of the 256 byte values,
    as compressed, encrypted or random data do (~160 of them) and text does not (~50):
    a cheap guess that zlib would not save a tenth.

    >>> looks_random(os.urandom(256)), looks_random(b"x = compute(1) + 2  # note" * 10)
    (True, False)
    """
    return len(set(data[:COMPRESS_MIN])) > 128


class FrameWriter:
    """Frames buffered into writes of ``SEND_BUFFER`` bytes onto ``send`` (a channel's
    ``sendall``); counts the bytes that went out."""

    def __init__(self, send: object) -> None:
        self._send = send
        self._buf: list[bytes] = []
        self._size = 0
        self.sent = 0

    def write(self, data: bytes) -> None:
        self._buf.append(data)
        self._size += len(data)
        if self._size >= SEND_BUFFER:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            data = b"".join(self._buf)
            self._buf, self._size = [], 0
            self._send(data)  # type: ignore[operator]
            self.sent += len(data)

    def frame(self, head: str, data: bytes, z: bool) -> int:
        """One frame: ``head`` (kind and name), then the size, flag and bytes."""
        parts = head.split(" ", 2)
        extra = f" {parts[2]}" if len(parts) > 2 else ""
        self.write(f"{parts[0]} {parts[1]} {len(data)} {int(z)}{extra}\n".encode())
        if len(data) >= SEND_BUFFER:
            self.flush()
            self._send(data)  # type: ignore[operator]
            self.sent += len(data)
        else:
            self.write(data)
        return len(data)

    def blob(self, digest: str, path: Path | bytes) -> int:
        """Frame the local blob ``path`` (or its bytes, in memory already; compressed
        when it pays); return its size."""
        if isinstance(path, bytes):
            self.frame(f"B {digest}", *pack(path))
            return len(path)
        size = path.stat().st_size
        if size <= WHOLE_BLOB:
            self.frame(f"B {digest}", *pack(path.read_bytes()))
            return size
        self.write(f"B {digest} {size} 0\n".encode())
        self.flush()
        with open(path, "rb") as f:
            left = size
            while left:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    raise TargetError(f"local blob {path} shrank while it was sent; "
                                      "submit again")
                self._send(chunk)  # type: ignore[operator]
                self.sent += len(chunk)
                left -= len(chunk)
        return size


# -- outputs, the client's side ----------------------------------------------------------


def safe_name(name: str) -> bool:
    """Whether a file name the host sent may be used as one name in a local folder:
    not empty, ``.`` or ``..``, and with no ``/``, ``\\`` or NUL (so never absolute).

    >>> [safe_name(n) for n in ("a.txt", "..", "../x", "/etc", "a\\0b")]
    [True, False, False, False, False]
    """
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def local_index(local: Path) -> dict[str, list[int]]:
    """``{name: [size, int(mtime)]}`` of the regular files under ``local`` (links not
    followed): what the host need not send again."""
    index: dict[str, list[int]] = {}
    if os.path.islink(local) or not local.is_dir():
        return index
    for folder, _dirs, files in os.walk(local):
        rel = os.path.relpath(folder, local)
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if stat.S_ISREG(st.st_mode) and not name.endswith(".part"):
                key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                index[key] = [st.st_size, int(st.st_mtime)]
    return index


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise EOFError("the outputs stream ended early")
        data += more
    return data


def receive_outputs(stream: BinaryIO, local: Path) -> list[str]:
    """Write the files framed on ``stream`` (``hostsession.send_outputs``) under ``local``;
    return the names written.

    The host names the files, so nothing it says may reach outside ``local``: a name
    is ``/``-separated parts, each of which must pass ``safe_name`` (no ``..``, no
    absolute path, no NUL or backslash); no local link is ever followed or replaced
    (a file under one is skipped); and each file is written to a new temporary name,
    then renamed. The stream is read to its end whatever is skipped.
    """
    written: list[str] = []
    while True:
        (length,) = struct.unpack(">I", _read_exact(stream, 4))
        if not length:
            return written
        try:
            name, mtime, atime = json.loads(_read_exact(stream, length))
            parts = name.split("/") if isinstance(name, str) else [""]
            mtime, atime = float(mtime), float(atime)
        except (ValueError, TypeError):
            name, parts, mtime, atime = "", [""], 0.0, 0.0
        dest = _destination(local, parts) if all(safe_name(p) for p in parts) else None
        tmp = None
        fd = -1
        if dest is not None:
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}-{os.urandom(4).hex()}.part")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                         getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            while True:
                size, z = struct.unpack(">IB", _read_exact(stream, 5))
                if not size:
                    break
                data = _read_exact(stream, size)
                if fd >= 0:
                    data = zlib.decompress(data) if z else data
                    while data:
                        data = data[os.write(fd, data):]
        except BaseException:
            if fd >= 0:
                os.close(fd)
                assert tmp is not None
                os.unlink(tmp)
            raise
        if fd >= 0 and tmp is not None and dest is not None:
            os.close(fd)
            os.utime(tmp, (atime, mtime))
            os.replace(tmp, dest)
            written.append(name)


def _destination(local: Path, parts: list[str]) -> Path | None:
    """Where a file of ``local``'s tree named ``parts`` may be written, making its
    folders; None if a link or a non-folder is in the way (nothing is written through
    a link, or over one, or over a folder)."""
    folder = local
    for part in [None, *parts[:-1]]:
        if part is not None:
            folder = folder / part
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            try:
                os.mkdir(folder)
            except OSError:
                return None
            continue
        if not stat.S_ISDIR(st.st_mode):  # a link (never followed) or a file
            return None
    dest = folder / parts[-1]
    try:
        st = os.lstat(dest)
    except FileNotFoundError:
        return dest
    return dest if stat.S_ISREG(st.st_mode) else None
