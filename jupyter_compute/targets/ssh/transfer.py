"""Files to and from an SSH host in one stream each: a few round trips, not a few per file.

**Sync** runs ``RECEIVE`` (standard library only) with the host's Python on one
exec channel and talks to it over stdin/stdout::

    client → host   W <n> <ask>\\n  and n digests, one a line     the blobs the run needs
    host → client   M <k> <n>\\n and k lines, n bytes (digests,  which of them it lacks
                    "runtime")
    client → host   B <digest> <size> <z>\\n <size bytes>          a blob (z: zlib-compressed)
                    R <name> <size> <z>\\n <size bytes>            a runtime file
                    F <name> <size> <z> <mode>\\n <size bytes>     a file of the run folder
                    E\\n                                            the end
    host → client   OK <blobs> <bytes>\\n   or   ERR <what>\\n

The client does not wait for the ``M`` answer when it already knows what is missing
(the connection's probe asked, or the connection knows the host has all but a few
small blobs, which it then sends unasked): the whole sync is one exchange, pipelined.
The host checks each blob's sha256 while it writes it under a temporary name and
renames it into ``blobs/sha256/ab/<digest>`` only when it matches, so a blob is
either whole and right or absent: after a dropped connection, a new sync asks again
and sends only the rest. On a warm host the same frames go as one request to the
helper session (``hostsession.receive``), with the manifest as ``K`` (whole, kept as
a blob) or ``D`` (the entries that changed against the one the host kept).

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
    from collections.abc import Iterable
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
#: What the client writes to the channel at once.
SEND_BUFFER = 256 * 1024
_CHUNK = 1024 * 1024

# Run by the host's Python (≥ 3.9, checked by the probe): argv is the workdir, the run
# folder and the runtime folder (both relative to the workdir).
RECEIVE = r"""
import hashlib, os, re, signal, sys, zlib
signal.signal(signal.SIGHUP, lambda *a: sys.exit(1))  # a dropped link: clean up below
w = os.path.abspath(os.path.expanduser(sys.argv[1]))
run, runtime = [os.path.join(w, p) for p in sys.argv[2:4]]
package = os.path.join(runtime, "jupyter_compute")
inp, out = sys.stdin.buffer, sys.stdout.buffer
DIGEST = re.compile(rb"[0-9a-f]{64}\Z")
NAME = re.compile(rb"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
made = set()
tmp = None

def fail(what):
    out.write(b"ERR " + what.encode() + b"\n")
    out.flush()
    sys.exit(2)

def folder(path):
    if path not in made:
        os.makedirs(path, exist_ok=True)
        made.add(path)
    return path

def receive(dest, size, z, mode, digest=None):
    global tmp
    tmp = "%s.tmp-%d" % (dest, os.getpid())
    h = hashlib.sha256() if digest else None
    unz = zlib.decompressobj() if z else None
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        left = size
        while left:
            data = inp.read(min(left, 1 << 20))
            if not data:
                sys.exit(1)  # the link dropped mid-file
            left -= len(data)
            if unz is not None:
                data = unz.decompress(data)
            if h is not None:
                h.update(data)
            while data:
                data = data[os.write(fd, data):]
        if unz is not None:
            data = unz.flush()
            if h is not None:
                h.update(data)
            while data:
                data = data[os.write(fd, data):]
    finally:
        os.close(fd)
    if h is not None and h.hexdigest() != digest:
        os.unlink(tmp)
        tmp = None
        fail("corrupt " + digest)
    os.rename(tmp, dest)
    tmp = None

try:
    try:
        os.mkdir(run, 0o700)  # its spec may hold the run's environment variables
    except FileExistsError:
        pass
    head = inp.readline().split()
    if not head or head[0] != b"W":
        fail("no request")
    wanted = [inp.readline().strip() for _ in range(int(head[1]))]
    lacking = []
    if not os.path.exists(os.path.join(package, "__init__.py")):
        lacking.append(b"runtime")
    for d in wanted:
        if DIGEST.match(d) and not os.path.exists(os.path.join(w, "blobs", "sha256",
                                                               d[:2].decode(), d.decode())):
            lacking.append(d)
    body = b"".join(x + b"\n" for x in lacking)
    out.write(b"M %d %d\n" % (len(lacking), len(body)) + body)
    out.flush()
    blobs = sent = 0
    while True:
        h = inp.readline().split()
        if not h:
            sys.exit(1)  # the link dropped between files
        kind = h[0]
        if kind == b"E":
            break
        name, size, z = h[1], int(h[2]), h[3] == b"1"
        if kind == b"B" and DIGEST.match(name):
            digest = name.decode()
            dest = os.path.join(folder(os.path.join(w, "blobs", "sha256", digest[:2])), digest)
            receive(dest, size, z, 0o666, digest)
            blobs += 1
            sent += size
        elif kind == b"R" and NAME.match(name):
            receive(os.path.join(folder(package), name.decode()), size, z, 0o666)
        elif kind == b"F" and NAME.match(name):
            receive(os.path.join(run, name.decode()), size, z, int(h[4], 8))
        else:
            fail("bad frame " + repr(h[:2]))
    out.write(b"OK %d %d\n" % (blobs, sent))
    out.flush()
finally:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass
"""

class CorruptBlobError(TargetError):
    """A blob's bytes did not match its sha256 when they reached the host."""


# -- sync, the client's side -------------------------------------------------------------


def pack(data: bytes) -> tuple[bytes, bool]:
    """``data`` zlib-compressed if that saves at least a tenth, else as it is; and which.

    >>> pack(b"a" * 1000)[1], pack(os.urandom(1000))[1]
    (True, False)
    """
    if len(data) < COMPRESS_MIN:
        return data, False
    packed = zlib.compress(data, 1)
    if len(packed) <= COMPRESS_KEEP * len(data):
        return packed, True
    return data, False


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

    def blob(self, digest: str, path: Path) -> int:
        """Frame the local blob ``path`` (compressed when it pays); return its size."""
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


def parse_missing(lines: Iterable[bytes]) -> tuple[list[str], bool]:
    """The ``M`` answer as (missing digests, whether the runtime is missing)."""
    found = [line.decode().strip() for line in lines]
    return [d for d in found if d != "runtime"], "runtime" in found


def read_missing(stream: BinaryIO) -> tuple[list[str], bool]:
    """Read the ``M`` answer from the receiver's stdout, its lines in one read (5,000
    ``readline`` calls on a paramiko channel cost about a second)."""
    head = stream.readline().split()
    if len(head) != 3 or head[0] != b"M":
        raise ReceiverError(head)
    lines = _read_exact(stream, int(head[2])).splitlines()
    if len(lines) != int(head[1]):
        raise ReceiverError(head)
    return parse_missing(lines)


def read_result(stream: BinaryIO) -> None:
    """Read the final ``OK`` (or raise the ``ERR`` it says instead)."""
    head = stream.readline().split()
    if not head or head[0] != b"OK":
        raise ReceiverError(head)


class ReceiverError(TargetError):
    """The receiver on the host said something other than what the protocol expects."""

    def __init__(self, said: list[bytes]) -> None:
        self.said = said
        super().__init__(b" ".join(said).decode(errors="replace"))


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
