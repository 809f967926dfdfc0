"""Snapshots of a source folder, stored content-addressed in the workspace.

A run ships a snapshot: the files of its source folder that ``git`` would consider
(ignore files honoured exactly as git does), each stored once in a sha256 blob store
and listed in a manifest::

    <ws>/blobs/sha256/ab/abcdef...   exact file bytes (symlinks: the link text)
    <ws>/blobs/tmp/                  large files being streamed in
    <ws>/snapshots/<id>.json         manifest: path -> [sha256, size, mode], parent, git
    <ws>/cache/<key>.json            per source folder: last snapshot, stat cache and
                                     compiled ignore rules (key = sha256 of the
                                     folder's real path)

Everything is written to a unique temporary name and moved into place with
``os.replace``, so many processes can snapshot into one workspace at once and a
reader never sees half a blob, manifest or cache.

The ignore rules live in :mod:`.ignore`, the blob store in :mod:`.blobstore` and the
git information in :mod:`.gitinfo`; this module walks the folder, keeps the stat
cache, enforces the limits and writes the manifest.

Example::

    >>> snap = take_snapshot("~/project", "~/project/.jupyter_compute")
    >>> snap.stats.new_files, snap.manifest_path
    (3, '/home/me/project/.jupyter_compute/snapshots/9f2c....json')
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import operator
import os
import re
import stat
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from .blobstore import WHOLE_FILE_BYTES, BlobStore, hash_file
from .exceptions import SnapshotError, SnapshotLimitError
from .gitinfo import GitInfo, GitProbe
from .ignore import IgnoreRules, Levels, ignored
from .protocol import link_problem, utcnow, write_atomic
from .units import format_size

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _T = TypeVar("_T")
    _R = TypeVar("_R")

__all__ = [
    "ALWAYS_EXCLUDED_DIRS",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CHANGED_FILES",
    "BlobStore",
    "GitInfo",
    "LINK_MODE",
    "Snapshot",
    "SnapshotStats",
    "git_info",
    "list_files",
    "load_manifest",
    "take_snapshot",
]

DEFAULT_MAX_BYTES = 300 * 1024 * 1024
DEFAULT_MAX_CHANGED_FILES = 2000
#: Never snapshotted, at any depth (``outputs`` too, at the source root only).
ALWAYS_EXCLUDED_DIRS = (".git", ".jupyter_compute", ".ipynb_checkpoints", "__pycache__")
#: ``mode`` of a symlink in a manifest; its blob is the link text.
LINK_MODE = stat.S_IFLNK | 0o777

_ROOT_EXCLUDED_DIRS = ("outputs",)
_EXTRA_MODE = 0o644
# A file modified within this long of our stat() may change again without its mtime
# moving (coarse timestamps: git's "racy clean" problem), so its hash is not cached.
_RACY_NS = 2_000_000_000
# Files this large go to a few threads while the small ones are copied in between.
_THREAD_BYTES = 1024 * 1024
#: A snapshot for a remote host keeps new files up to this size in memory as it hashes
#: them (``Snapshot.contents``), up to ``_KEEP_TOTAL`` in all: the sender then opens
#: and reads none of them again (5,000 small files: ~0.3-0.6 s here). Below
#: ``_THREAD_BYTES``, so only the main thread keeps any.
_KEEP_FILE = 256 * 1024
_KEEP_TOTAL = 64 * 1024 * 1024
_WORKERS = 2
_CACHE_VERSION = 2
_EXCLUDED = frozenset(ALWAYS_EXCLUDED_DIRS)
# errno values that mean the workspace, not the source file, is the problem
_FULL = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EROFS")
                  if hasattr(errno, name))


# -- records -------------------------------------------------------------------------


@dataclass
class SnapshotStats:
    """Totals of one snapshot; ``new_*`` count blobs the store did not have before."""

    files: int
    bytes: int
    new_files: int
    new_bytes: int


@dataclass
class Snapshot:
    """One snapshot of a source folder, as written to ``manifest_path``."""

    id: str
    parent: str | None
    source_dir: str
    files: dict[str, tuple[str, int, int]]
    stats: SnapshotStats
    git: GitInfo | None
    warnings: list[str] = field(default_factory=list)
    manifest_path: str = ""
    #: Taken with ``store_blobs=False``: the digests the blob store lacks, each with a
    #: source file that had those bytes when it was hashed (the sender re-checks them).
    sources: dict[str, str] = field(default_factory=dict)
    #: Of those, the small ones' bytes as they were hashed (see ``_KEEP_FILE``).
    contents: dict[str, bytes] = field(default_factory=dict)


# -- walking the source folder -------------------------------------------------------


@dataclass
class _SourceCache:
    """What the last snapshot of one source folder leaves for the next one.

    ``keys`` holds ``(size, mtime_ns, inode, st_mode)`` of the files whose digest in
    ``files`` can be trusted without reading them again; ``ignore_at`` and ``ignore``
    record the ignore files seen (folder prefix -> content) and their compiled regexes.
    """

    path: str
    last_id: str | None = None
    files: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    keys: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    total: int = 0
    ignore_name: str = ""
    ignore_at: dict[str, bytes] = field(default_factory=dict)
    ignore: dict[bytes, str | None] = field(default_factory=dict)

    @classmethod
    def load(cls, cache_dir: str, real_root: str) -> _SourceCache:
        """The cache of ``real_root``; empty when missing, stale or not what we wrote.

        The file sits in a workspace others may write to, so it is plain JSON (data,
        never code, unlike a pickle) and is checked before use: a corrupt or crafted
        file costs one full snapshot, never an error or a wrong digest format.
        """
        key = hashlib.sha256(os.fsencode(real_root)).hexdigest()
        cache = cls(os.path.join(cache_dir, f"{key}.json"))
        try:
            with open(cache.path, "rb") as f:
                data = json.loads(f.read())
            if data["version"] == _CACHE_VERSION and data["source"] == real_root:
                cache._restore(data)
        except Exception:  # missing, another version, corrupt: start afresh
            pass  # _restore assigns nothing until every check has passed
        return cache

    def _restore(self, data: dict[str, Any]) -> None:
        # Columns, one entry per file (see save): the C decoder reads flat lists of
        # numbers fastest, and zip/map/compress rebuild the tuples without a Python loop.
        paths, hexes, sizes, modes = data["paths"], data["digests"], data["sizes"], data["modes"]
        mtimes, inodes, st_modes = data["mtimes"], data["inodes"], data["st_modes"]
        last_id, total, ignore_name = data["last_id"], data["total"], data["ignore_name"]
        n = len(paths)
        if not (len(sizes) == len(modes) == len(mtimes) == len(inodes) == len(st_modes) == n
                and isinstance(hexes, str) and len(hexes) == 64 * n and _lower_hex(hexes)
                and _types(paths) <= {str} and _types(sizes, modes, [total]) <= {int}
                and _types(mtimes, inodes, st_modes) <= {int, type(None)}
                and (last_id is None or isinstance(last_id, str) and len(last_id) == 64
                     and _lower_hex(last_id))
                and isinstance(ignore_name, str)):
            raise ValueError("not a snapshot cache")
        ignore_at = {prefix: text.encode("latin-1") for prefix, text in data["ignore_at"]}
        ignore = {text.encode("latin-1"): src for text, src in data["ignore"]}
        for src in ignore.values():
            if src is not None:
                re.compile(src, re.DOTALL)  # a bad pattern fails here, not in the walk
        digests = list(map(hexes.__getitem__, map(slice, range(0, 64 * n, 64),
                                                  range(64, 64 * n + 64, 64))))
        self.keys = dict(itertools.compress(zip(paths, zip(sizes, mtimes, inodes, st_modes)),
                                            map(operator.is_not, mtimes, itertools.repeat(None))))
        self.files = dict(zip(paths, zip(digests, sizes, modes)))
        self.last_id, self.total, self.ignore_name = last_id, total, ignore_name
        self.ignore_at, self.ignore = ignore_at, ignore

    def save(self, real_root: str) -> None:
        """Write the cache: a column per field, the stat key beside each file's entry.

        A key's size is its file's size (a file whose size changed while it was read
        is not keyed), so it is stored once; a file without a key has null there.
        """
        files, keys_get = self.files, self.keys.get
        keys = [keys_get(rel) for rel in files]
        keys = [k if k is not None and k[0] == entry[1] else None
                for k, entry in zip(keys, files.values())]
        data = {
            "version": _CACHE_VERSION, "source": real_root, "last_id": self.last_id,
            "total": self.total, "ignore_name": self.ignore_name,
            "paths": list(files), "digests": "".join(d for d, _, _ in files.values()),
            "sizes": [s for _, s, _ in files.values()], "modes": [m for _, _, m in files.values()],
            "mtimes": [k and k[1] for k in keys], "inodes": [k and k[2] for k in keys],
            "st_modes": [k and k[3] for k in keys],
            # bytes as latin-1 text: one code point per byte, exact both ways
            "ignore_at": [[p, c.decode("latin-1")] for p, c in self.ignore_at.items()],
            "ignore": [[c.decode("latin-1"), src] for c, src in self.ignore.items()],
        }
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_atomic(self.path, json.dumps(data, separators=(",", ":")).encode())


def _types(*columns: list[Any]) -> set[type]:
    """The types of the values in ``columns`` (map and set run in C: ~0.1 µs a value)."""
    return {t for column in columns for t in set(map(type, column))}


def _lower_hex(text: str) -> bool:
    """True when ``text`` is lowercase hex digits only (a regex is 10x slower here)."""
    try:
        # fromhex skips whitespace, so a count that comes out short means there was some
        return (text.isascii() and text == text.lower()
                and len(bytes.fromhex(text)) * 2 == len(text))
    except ValueError:
        return False


@dataclass
class _Tree:
    """What a walk found.

    ``hits`` are files whose stat matches the cache (digest known, not to be read);
    ``todo`` the other regular files, with their lstat when asked for; ``links`` the
    symlinks kept, with their text; ``extra`` files given by the caller.
    """

    hits: list[str] = field(default_factory=list)
    todo: list[tuple[str, os.stat_result | None]] = field(default_factory=list)
    links: list[tuple[str, bytes]] = field(default_factory=list)
    extra: list[tuple[str, bytes]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ignore_at: dict[str, bytes] = field(default_factory=dict)


def source_root(source_dir: str | os.PathLike[str]) -> str:
    root = os.path.abspath(os.path.expanduser(os.fspath(source_dir)))
    if not os.path.exists(root):
        raise SnapshotError(f"source folder {root} does not exist")
    if not os.path.isdir(root):
        raise SnapshotError(f"source folder {root} is not a folder")
    return root


def git_info(source_dir: str | os.PathLike[str]) -> GitInfo | None:
    """Repository, branch, commit and dirtiness of ``source_dir``; None outside git.

    Example::

        >>> git_info(".")
        GitInfo(repository='git@github.com:me/proj.git', branch='main', commit='3f1e...',
                dirty=True)
    """
    probe = _git_probe(source_root(source_dir))
    return None if probe is None else probe.result()[0]


def _git_probe(root: str) -> GitProbe | None:
    # what is never snapshotted (JupyterLab's checkpoints, outputs/) is not "dirty" either
    return GitProbe.start(root, ALWAYS_EXCLUDED_DIRS, _ROOT_EXCLUDED_DIRS)


_SCANDIR_FD = os.scandir in os.supports_fd and hasattr(os, "O_DIRECTORY")


def _scan(root: str, rules: IgnoreRules, cache: _SourceCache | None,
          with_stat: bool = True) -> _Tree:
    """Walk ``root`` as git would list it, pruning ignored and always-excluded folders.

    Each folder with an ignore file adds a level ``(offset, regex)``, deepest first,
    matched against the path from ``offset``. This loop runs once per file, so it
    avoids work there: a file the cache kept under the same ignore files skips the
    regexes, and one whose lstat matches the cache is only counted as a hit.
    """
    tree = _Tree()
    hits, todo = tree.hits, tree.todo
    real_root = os.path.realpath(root)
    ignore_name = rules.name
    keys_get = (cache.keys if cache is not None else {}).get
    cached_at = cache.ignore_at if cache is not None else {}
    same_rules = cache is not None and cache.ignore_name == ignore_name
    excluded, root_excluded = _EXCLUDED, _ROOT_EXCLUDED_DIRS
    levels: Levels = ()
    stack = [("", levels, same_rules)]
    while stack:
        prefix, levels, same = stack.pop()
        folder = os.path.join(root, prefix)
        fd = None
        try:
            # listing through a folder fd makes each entry's lstat a one-name lookup
            if _SCANDIR_FD:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            with os.scandir(folder if fd is None else fd) as it:
                entries = list(it)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            raise SnapshotError(f"cannot read folder {prefix or '.'} in {root}: "
                                f"{exc.strerror}") from exc
        try:
            content = None
            for entry in entries:
                # git reads an ignore file only when it is a regular file
                if entry.name == ignore_name and entry.is_file(follow_symlinks=False):
                    content, rx = rules.load(os.path.join(folder, ignore_name),
                                             prefix + ignore_name)
                    tree.ignore_at[prefix] = content
                    if rx is not None:
                        levels = ((len(prefix), rx), *levels)
                    break
            same = same and cached_at.get(prefix) == content
            for entry in entries:
                name = entry.name
                if name in excluded or (not prefix and name in root_excluded):
                    continue
                rel = prefix + name
                if entry.is_dir(follow_symlinks=False):
                    if not (levels and ignored(levels, rel + "/")):
                        stack.append((rel + "/", levels, same))
                elif entry.is_file(follow_symlinks=False):
                    key = keys_get(rel)
                    if (key is None or not same) and levels and ignored(levels, rel):
                        continue
                    if not with_stat:
                        todo.append((rel, None))
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted while we walked
                    if (key is not None and key[1] == st.st_mtime_ns
                            and key[0] == st.st_size and key[2] == st.st_ino
                            and key[3] == st.st_mode):
                        hits.append(rel)
                    else:
                        todo.append((rel, st))
                elif entry.is_symlink() and not (levels and ignored(levels, rel)):
                    _add_link(tree, real_root, os.path.join(folder, name), rel)
                # fifos, sockets, devices: nothing a script could be shipped
        finally:
            if fd is not None:
                os.close(fd)
    return tree


def _add_link(tree: _Tree, real_root: str, path: str, rel: str) -> None:
    """Keep the link at ``path`` if the agent will accept it (``protocol.link_problem``),
    else leave it out with a warning: a run must not fail late for what is caught here."""
    text = os.readlink(path)
    # the walk never enters a linked folder, so real_root/rel has no link above it
    problem = link_problem(os.path.join(real_root, rel), real_root, "the source folder")
    if problem is None and not os.path.exists(path):
        problem = "its target does not exist"
    if problem is not None:
        tree.warnings.append(f"skipped symlink {rel} -> {text}: {problem}")
    else:
        tree.links.append((rel, os.fsencode(text)))


# -- limits --------------------------------------------------------------------------


def _ignore_line(rel: str) -> str:
    """The ignore-file line naming ``rel`` (a folder when it ends with "/")."""
    line = re.sub(r"([*?\[\\])", r"\\\1", rel)
    if line[:1] in ("#", "!"):
        line = "\\" + line
    if line.endswith(" "):
        line = line[:-1] + "\\ "
    return line


def _limit_error(root: str, ignore_name: str, over: str, setting: str,
                 sizes: Sequence[tuple[str, int]], suggest: str) -> SnapshotLimitError:
    largest = sorted(sizes, key=lambda item: (-item[1], item[0]))[:5]
    listed = ", ".join(f"{path} ({format_size(size)})" for path, size in largest)
    key, env = setting, f"JUPYTER_COMPUTE_{setting.upper()}"
    return SnapshotLimitError(
        f"snapshot of {root} {over} (largest: {listed}); add {_ignore_line(suggest)!r} to "
        f"{ignore_name} to leave it out, or raise the limit with {key} in run.yml or "
        f"{env}", largest)


def _top_level(rel: str) -> str:
    head, sep, _ = rel.partition("/")
    return head + "/" if sep else rel


# -- snapshots -----------------------------------------------------------------------



def _parallel(fn: Callable[[_T], _R], items: Sequence[_T], sizes: Sequence[int]) -> list[_R]:
    """``[fn(x) for x in items]``, with the large files on a few threads.

    Measured (benchmarks/bench_snapshot.py): threads lose on small files, whose few
    short syscalls each hand the GIL over; a large file spends long stretches in
    hashlib and read/write with the GIL released, so those overlap the small ones.
    """
    large = [i for i, size in enumerate(sizes) if size >= _THREAD_BYTES]
    if len(large) < 2:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    out: list[Any] = [None] * len(items)
    pool = ThreadPoolExecutor(max_workers=_WORKERS)
    try:
        futures = [(i, pool.submit(fn, items[i])) for i in large]
        for i, size in enumerate(sizes):
            if size < _THREAD_BYTES:
                out[i] = fn(items[i])
        for i, future in futures:
            out[i] = future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return out


def _snapshot_id(files: dict[str, tuple[str, int, int]]) -> str:
    # NUL cannot occur in a path, so "path NUL digest size mode NUL" is unambiguous
    canon = "".join([f"{p}\0{d} {s} {m}\0" for p, (d, s, m) in files.items()])
    return hashlib.sha256(canon.encode("utf-8", "surrogateescape")).hexdigest()


def list_files(source_dir: str | os.PathLike[str]) -> list[str]:
    """The relative posix paths a snapshot of ``source_dir`` would hold, sorted.

    The same list as ``git ls-files --cached --others --exclude-standard`` in a fresh
    repository of the folder, minus always-excluded folders and outside symlinks.

    Example::

        >>> list_files("project")
        ['.gitignore', 'data/small.csv', 'train.py']
    """
    root = source_root(source_dir)
    tree = _scan(root, IgnoreRules(root, {}), None, with_stat=False)
    return sorted([rel for rel, _ in tree.todo] + [rel for rel, _ in tree.links])


def take_snapshot(source_dir: str | os.PathLike[str], workspace_dir: str | os.PathLike[str],
                  *, max_bytes: int = DEFAULT_MAX_BYTES,
                  max_changed_files: int = DEFAULT_MAX_CHANGED_FILES,
                  with_git: bool = True,
                  extra_files: Mapping[str, bytes] | None = None,
                  store_blobs: bool = True) -> Snapshot:
    """Snapshot ``source_dir`` into the workspace ``workspace_dir`` (a ``.jupyter_compute``).

    Only content the blob store lacks is written; unchanged files are not even read
    (stat cache). Over ``max_bytes`` in total or ``max_changed_files`` new blobs raises
    :class:`SnapshotLimitError` before anything is written. ``extra_files`` (relative
    path -> bytes, e.g. a ``%%submit`` cell) are added with mode 0o644, replacing any
    file of the folder at the same path.

    ``store_blobs=False`` (a snapshot for a remote host, which gets the bytes from the
    source files as it sends them) only hashes new files: writing thousands of blobs
    here would cost more than sending them. They are listed in ``sources``, and the
    stat cache does not vouch for them, so a later snapshot reads them again.

    Example::

        >>> snap = take_snapshot("project", "project/.jupyter_compute")
        >>> snap.stats
        SnapshotStats(files=42, bytes=1048576, new_files=1, new_bytes=2048)
    """
    started = time.time_ns()
    root = source_root(source_dir)
    real_root = os.path.realpath(root)
    ws = os.path.abspath(os.path.expanduser(os.fspath(workspace_dir)))
    probe = _git_probe(root) if with_git else None  # runs while we walk
    try:
        cache = _SourceCache.load(os.path.join(ws, "cache"), real_root)
        rules = IgnoreRules(root, cache.ignore)
        tree = _scan(root, rules, cache)
        if extra_files:
            _add_extra(tree, extra_files)
        job = _Job(root, BlobStore(os.path.join(ws, "blobs")), tree, cache, rules.name,
                   store_blobs)
        job.check_size(max_bytes)
        job.ingest(max_changed_files, trust_before=started - _RACY_NS)
        git, warning = probe.result() if probe is not None else (None, None)
    finally:
        if probe is not None:
            probe.close()

    snap = Snapshot(
        id=job.snap_id, parent=cache.last_id, source_dir=root, files=job.files,
        stats=SnapshotStats(files=len(job.files), bytes=job.total,
                            new_files=len(job.new_blobs), new_bytes=sum(job.new_blobs.values())),
        git=git, warnings=tree.warnings + ([warning] if warning else []),
        manifest_path=os.path.join(ws, "snapshots", f"{job.snap_id}.json"),
        sources=job.sources, contents=job.contents)
    if not os.path.exists(snap.manifest_path):
        os.makedirs(os.path.dirname(snap.manifest_path), exist_ok=True)
        write_atomic(snap.manifest_path, _manifest_json(snap).encode())
    # written last: everything the cache vouches for is in the store by now
    if (not job.unchanged or rules.used != cache.ignore or tree.ignore_at != cache.ignore_at
            or cache.ignore_name != rules.name or cache.last_id != snap.id):
        cache.last_id, cache.files, cache.keys, cache.total = (snap.id, job.files, job.keys,
                                                               job.total)
        cache.ignore_name, cache.ignore_at, cache.ignore = (rules.name, tree.ignore_at,
                                                            rules.used)
        cache.save(real_root)
    return snap


def _add_extra(tree: _Tree, extra_files: Mapping[str, bytes]) -> None:
    """Put ``extra_files`` into the walk's result, in place of same-named files."""
    paths = {*tree.hits, *(rel for rel, _ in tree.todo), *(rel for rel, _ in tree.links)}
    for rel in extra_files:
        parts = rel.split("/")
        if rel.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise SnapshotError(f"extra file {rel!r} needs a relative path like 'dir/name.py'")
        # a file cannot also be a folder: "a.py" next to "a.py/x", or "a" next to "a/b"
        above = {"/".join(parts[:i]) for i in range(1, len(parts))} & paths
        below = next((p for p in paths if p.startswith(rel + "/")), None)
        if above or below:
            raise SnapshotError(f"extra file {rel!r} clashes with "
                                f"{(above and min(above)) or below} in the source folder")
    tree.hits = [rel for rel in tree.hits if rel not in extra_files]
    tree.todo = [item for item in tree.todo if item[0] not in extra_files]
    tree.links = [item for item in tree.links if item[0] not in extra_files]
    tree.extra = [(rel, bytes(data)) for rel, data in extra_files.items()]


class _Job:
    """Turns a walk into files, blobs and an id, enforcing the limits before any write."""

    def __init__(self, root: str, store: BlobStore, tree: _Tree, cache: _SourceCache,
                 ignore_name: str, store_blobs: bool = True) -> None:
        self.root, self.store, self.tree, self.cache = root, store, tree, cache
        self.store_blobs = store_blobs
        self.sources: dict[str, str] = {}  # digest -> source file, for blobs not stored
        self.contents: dict[str, bytes] = {}  # digest -> bytes, for small ones of those
        self.ignore_name = ignore_name
        # content held in memory, never stat-cached: symlink texts and extra files
        self.inline = [(rel, data, hashlib.sha256(data).hexdigest(), mode)
                       for rel, data, mode in [*((r, t, LINK_MODE) for r, t in tree.links),
                                               *((r, d, _EXTRA_MODE) for r, d in tree.extra)]]
        cached = cache.files
        # Every file a hit and none missing or added: the last snapshot, as it was.
        self.unchanged = (cache.last_id is not None and not tree.todo
                          and len(tree.hits) + len(self.inline) == len(cached)
                          and all(cached.get(rel) == (digest, len(data), mode)
                                  for rel, data, digest, mode in self.inline))
        if self.unchanged:
            self.total = cache.total
        else:
            self.total = (sum(cached[rel][1] for rel in tree.hits)
                          + sum(st.st_size for _, st in tree.todo if st is not None)
                          + sum(len(data) for _, data, _, _ in self.inline))
        self.files: dict[str, tuple[str, int, int]] = cached
        self.keys = cache.keys
        self.snap_id = cache.last_id or ""
        self.new_blobs: dict[str, int] = {}

    def sizes(self) -> list[tuple[str, int]]:
        cached = self.cache.files
        return ([(rel, cached[rel][1]) for rel in self.tree.hits]
                + [(rel, st.st_size) for rel, st in self.tree.todo if st is not None]
                + [(rel, len(data)) for rel, data, _, _ in self.inline])

    def check_size(self, max_bytes: int) -> None:
        if self.total <= max_bytes:
            return
        sizes = self.sizes()
        top = max(sizes, key=lambda item: item[1])[0]
        raise _limit_error(self.root, self.ignore_name,
                           f"is {format_size(self.total)}, over the {format_size(max_bytes)} limit",
                           "snapshot_max_mb", sizes, _top_level(top))

    def ingest(self, max_changed_files: int, trust_before: int) -> None:
        if self.unchanged:
            return
        root, store, todo = self.root, self.store, self.tree.todo
        # Hits are in the store already; only the rest can be new. When they could
        # exceed the limit, hash first and count exactly before writing anything.
        missing = [entry for entry in self.inline if not store.has(entry[2])]
        if len(todo) + len(missing) > max_changed_files:
            self._check_new(max_changed_files, missing)

        sizes = [st.st_size if st is not None else 0 for _, st in todo]
        if self.store_blobs:
            ingested = _parallel(lambda item: _read_store(store, root, item), todo, sizes)
        else:  # hash only; the blobs the store lacks are read from the sources when sent
            budget = [_KEEP_TOTAL]

            def hash_keep(item: tuple[str, os.stat_result | None]) -> tuple[str, int, bytes | None]:
                rel, st = item
                keep = st is not None and st.st_size <= min(_KEEP_FILE, budget[0])
                digest, size, data = _read_hash(root, rel, keep)
                if data is not None:
                    budget[0] -= len(data)
                return digest, size, data

            kept: list[bytes | None] = []
            ingested = []
            for digest, size, data in _parallel(hash_keep, todo, sizes):
                ingested.append((digest, size, not store.has(digest)))
                kept.append(data)
        cached_files, cached_keys = self.cache.files, self.cache.keys
        files = {rel: cached_files[rel] for rel in self.tree.hits}
        keys = {rel: cached_keys[rel] for rel in self.tree.hits}
        for i, ((rel, st), (digest, size, is_new)) in enumerate(zip(todo, ingested)):
            assert st is not None
            files[rel] = (digest, size, st.st_mode & 0o777)
            if is_new:
                self.new_blobs[digest] = size
                if not self.store_blobs:
                    self.sources.setdefault(digest, os.path.join(root, rel))
                    data = kept[i]
                    if data is not None:
                        self.contents[digest] = data
                    continue  # not keyed: the cache vouches only for what the store has
            # a file written within the racy window may change again unseen
            if st.st_mtime_ns < trust_before and size == st.st_size:
                keys[rel] = (size, st.st_mtime_ns, st.st_ino, st.st_mode)
        for rel, data, digest, mode in self.inline:
            files[rel] = (digest, len(data), mode)
            if store.put_bytes(data, digest):
                self.new_blobs[digest] = len(data)
        self.files = {rel: files[rel] for rel in sorted(files)}
        self.keys = keys
        self.total = sum(size for _, size, _ in files.values())
        self.snap_id = _snapshot_id(self.files)

    def _check_new(self, limit: int, missing: list[tuple[str, bytes, str, int]]) -> None:
        todo = self.tree.todo
        hashed = _parallel(lambda item: _read_hash(self.root, item[0]), todo,
                           [st.st_size if st is not None else 0 for _, st in todo])
        new: dict[str, tuple[str, int]] = {}
        for (rel, _), (digest, size, _data) in zip(todo, hashed):
            if digest not in new and not self.store.has(digest):
                new[digest] = (rel, size)
        for rel, data, digest, _ in missing:
            new[digest] = (rel, len(data))
        if len(new) <= limit:
            return
        counts: dict[str, int] = {}
        for rel, _ in new.values():
            counts[_top_level(rel)] = counts.get(_top_level(rel), 0) + 1
        # the line that leaves out the most new files; a folder over a file on a tie
        suggest = max(counts, key=lambda k: (counts[k], k.endswith("/")))
        raise _limit_error(self.root, self.ignore_name,
                           f"has {len(new)} new or changed files, over the {limit}-file "
                           "limit", "snapshot_max_files", list(new.values()), suggest)


def _read_hash(root: str, rel: str, keep: bool = False) -> tuple[str, int, bytes | None]:
    """The file's sha256 and size, and with ``keep`` its bytes."""
    try:
        if keep:
            with open(os.path.join(root, rel), "rb") as f:
                data = f.read()
            return hashlib.sha256(data).hexdigest(), len(data), data
        return (*hash_file(os.path.join(root, rel)), None)
    except OSError as exc:
        raise SnapshotError(f"cannot read {rel} in {root}: {exc.strerror}") from exc


def _read_store(store: BlobStore, root: str,
                item: tuple[str, os.stat_result | None]) -> tuple[str, int, bool]:
    rel, st = item
    path = os.path.join(root, rel)
    try:
        return store.put_file(path, st.st_size if st is not None else WHOLE_FILE_BYTES)
    except OSError as exc:
        if (exc.filename is not None and exc.filename != path) or exc.errno in _FULL:
            raise SnapshotError(f"cannot write to the blob store {store.root}: "
                                f"{exc.strerror}") from exc
        raise SnapshotError(f"cannot read {rel} in {root}: {exc.strerror}") from exc


def _manifest_json(snap: Snapshot) -> str:
    data = {
        "id": snap.id, "parent": snap.parent, "created": utcnow(),
        "source_dir": snap.source_dir,
        "files": {path: list(entry) for path, entry in snap.files.items()},
        "stats": {"files": snap.stats.files, "bytes": snap.stats.bytes,
                  "new_files": snap.stats.new_files, "new_bytes": snap.stats.new_bytes},
        "git": None if snap.git is None else snap.git.to_dict(),
    }
    # compact: the C encoder only runs without indent, and manifests list every file
    return json.dumps(data, separators=(",", ":"))


def load_manifest(workspace_dir: str | os.PathLike[str], snapshot_id: str) -> dict[str, Any]:
    """The manifest of ``snapshot_id`` as written by :func:`take_snapshot`.

    Example::

        >>> load_manifest(".jupyter_compute", snap.id)["files"]["train.py"]
        ['5e88...', 1234, 420]
    """
    path = os.path.join(os.fspath(workspace_dir), "snapshots", f"{snapshot_id}.json")
    try:
        with open(path, encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot {snapshot_id} in {workspace_dir}") from None
    return data
