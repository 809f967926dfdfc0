"""Snapshots against the real thing: real files in tmp_path, the real ``git`` binary.

``list_files`` is checked against ``git ls-files --cached --others --exclude-standard``
in a fresh repository of the same tree (global and system git config switched off).
Nothing is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import jupyter_compute.snapshot as snapshot_module
from jupyter_compute.exceptions import SnapshotError, SnapshotLimitError
from jupyter_compute.snapshot import (
    ALWAYS_EXCLUDED_DIRS,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_CHANGED_FILES,
    LINK_MODE,
    BlobStore,
    GitInfo,
    Snapshot,
    git_info,
    list_files,
    load_manifest,
    take_snapshot,
)

HOUR_NS = 3600 * 10**9


@pytest.fixture(autouse=True)
def isolated_git(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """No user or system git config (excludesFile, hooks, default branch) leaks in."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.com")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "core.excludesFile=" + os.devnull,
                           "-c", "init.defaultBranch=main", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout


def make(root: Path, spec: dict[str, str]) -> Path:
    """Files from ``{relpath: content}``; a path ending in "/" makes an empty folder."""
    for rel, content in spec.items():
        path = root / rel
        if rel.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, newline="")
    return root


def git_ls_files(root: Path) -> list[str]:
    """What git would add, in a fresh repository of ``root``."""
    git(root, "init", "-q")
    out = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    excluded = set(ALWAYS_EXCLUDED_DIRS)
    return sorted(p for p in out.split("\0")
                  if p and not excluded & set(p.split("/")[:-1]) and not p.startswith("outputs/"))


def age(path: Path, ns: int = HOUR_NS) -> None:
    """Move the mtime an hour back: out of the racy window, as for a file edited earlier."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - ns))


def age_tree(root: Path) -> None:
    for dirpath, _, names in os.walk(root):
        for name in names:
            if not os.path.islink(os.path.join(dirpath, name)):
                age(Path(dirpath, name))


def blobs(ws: Path) -> list[Path]:
    root = ws / "blobs" / "sha256"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def snap(src: Path, ws: Path, **kw) -> Snapshot:
    return take_snapshot(src, ws, with_git=False, **kw)


# -- ignore rules: the same list as git ------------------------------------------------

TREES = {
    "nested, negation, dir-only, anchored, globstar": {
        ".gitignore": "*.log\n!keep.log\nbuild/\n/data\n**/tmp\na/**/b\ndocs/*.txt\n# c\n\n",
        "x.log": "", "keep.log": "", "main.py": "", "build/out.o": "", "src/build/o": "",
        "build.py": "", "data/raw.csv": "", "src/data/ok.csv": "", "tmp/t": "",
        "src/deep/tmp/t": "", "a/b": "", "a/x/y/b": "", "a/c": "", "docs/x.txt": "",
        "docs/sub/x.txt": "", "docs/x.md": "",
        "src/.gitignore": "!*.log\n/local\nnested.txt\n",
        "src/y.log": "", "src/local": "", "src/deeper/local": "", "src/nested.txt": "",
        "src/deeper/.gitignore": "*.py\n!keep.py\n", "src/deeper/a.py": "",
        "src/deeper/keep.py": "", "src/deeper/z.log": "",
    },
    "excluded folder cannot be re-included": {
        ".gitignore": "logs/\n!logs/keep.txt\nvendor\n!vendor/lib.py\n",
        "logs/keep.txt": "", "logs/x.txt": "", "vendor/lib.py": "", "app.py": "",
    },
    "a later negated folder does not re-include its ignored files": {
        ".gitignore": "*.log\n!logs/\n", "logs/a.log": "", "logs/b.txt": "", "top.log": "",
    },
    "dirs below, everything below, and the /* idiom": {
        ".gitignore": "foo/**/\nbar/**\n!bar/keep\n",
        "foo/x": "", "foo/a/y": "", "foo/a/b/z": "", "bar/keep": "", "bar/other": "",
        "bar/sub/keep": "", "baz/.gitignore": "/*\n!/inc\n/inc/*\n!/inc/yes\n",
        "baz/no": "", "baz/inc/yes": "", "baz/inc/no": "", "baz/inc/yes2": "",
    },
    "deeper file overrides, escapes, classes, spaces, CRLF": {
        ".gitignore": "*.txt\n\\#hash\n\\!bang\ntrail   \nsp\\ \n[ab]x\n?.md\n*.py[co]\r\n",
        "n.txt": "", "sub/.gitignore": "!*.txt\n", "sub/n.txt": "", "#hash": "",
        "!bang": "", "trail": "", "sp ": "", "ax": "", "cx": "", "r.md": "", "rr.md": "",
        "m.pyc": "", "m.py": "", "m.pyo": "",
    },
    "every folder": {
        ".gitignore": "*/\n", "top.py": "", "sub/x.py": "", "sub/deep/y.py": "",
    },
    "globstar folder pattern and middle slash": {
        ".gitignore": "**/\n", "top.py": "", "sub/x.py": "",
        "other/.gitignore": "doc/frotz\n",
    },
    "middle-slash anchoring inside a nested file": {
        ".gitignore": "", "other/.gitignore": "doc/frotz\n/abs\nrel\n",
        "other/doc/frotz": "", "other/x/doc/frotz": "", "other/abs": "", "other/x/abs": "",
        "other/x/rel": "", "doc/frotz": "",
    },
}


@pytest.mark.parametrize("name", list(TREES))
def test_list_files_matches_git_ls_files(tmp_path: Path, name: str) -> None:
    root = make(tmp_path / "tree", TREES[name])
    ours = list_files(root)
    assert ours == git_ls_files(root)
    assert ours == sorted(ours)


def test_symlink_named_like_a_folder_is_a_file_to_ignore_rules(tmp_path: Path) -> None:
    root = make(tmp_path / "tree", {".gitignore": "build/\nlink.txt\n", "real/x": "",
                                    "t.txt": ""})
    (root / "build").symlink_to("real")  # a link is not a folder: "build/" skips it
    (root / "link.txt").symlink_to("t.txt")
    assert list_files(root) == git_ls_files(root) == [".gitignore", "build", "real/x",
                                                      "t.txt"]


PATTERNS = ["*.log", "!keep.log", "build/", "/data", "**/tmp", "a/**/b", "a/**", "!a/keep",
            "*", "!*/", "foo/**/", "**/", "*/", "/*", "!/foo", "/foo/*", "!/foo/bar",
            "doc/*.txt", "!logs/", "logs", "x?z", "[ab]*", "!b*", "**/c/**", "sub/",
            "/sub/d", "d", "!d/", "*.txt", "!important.txt", "#comment", "", "\\#hash",
            "\\!bang", "trail   ", "e/f/", "**/g", "g/", "!g/h", "*.py[co]", "/*.md",
            "nested/**/deep", "keep*", "!*.log", "a", "b/", "c", "!c/d.txt", "*/x", "**/x/*",
            "y/**/z/", "!y/", "[!a]*.txt", "[a-c]x", "f*/", "t\\ ", "\\*star",
            # odd lines git tolerates: no-ops, reversed ranges, brackets never matching "/"
            "!", "!/", "a\\", "[z-a]x", "**foo", "foo**", "a/**b", "[^x]*", "*[!.]", "[]]",
            "[!]]*", "!**", "/**"]
NAMES = ["a", "b", "c", "d", "e", "f", "g", "h", "x", "y", "z", "foo", "bar", "data",
         "build", "logs", "doc", "sub", "tmp", "keep.log", "a.log", "important.txt", "b.txt",
         "x.py", "x.pyc", "README.md", "deep", "nested", "xyz", "#hash", "!bang", "t ",
         "*star", "ax", "dx", "é", "]", "[", "foox", "xfoo"]


def random_tree(rng: random.Random, root: Path, depth: int = 0) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(rng.randint(1, 6)):
        path = root / rng.choice(NAMES)
        if path.exists():
            continue
        if depth < 4 and rng.random() < 0.4:
            random_tree(rng, path, depth + 1)
        else:
            path.write_text(path.name)
    if rng.random() < 0.5:
        lines = [rng.choice(PATTERNS) for _ in range(rng.randint(1, 6))]
        (root / ".gitignore").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("seed", range(60))
def test_random_trees_match_git_ls_files(tmp_path: Path, seed: int) -> None:
    root = tmp_path / "tree"
    random_tree(random.Random(seed), root)
    assert list_files(root) == git_ls_files(root)


@pytest.mark.parametrize("name", [".computeignore", ".amlignore"])
def test_compute_ignore_files_replace_gitignore_at_every_level(tmp_path: Path,
                                                               name: str) -> None:
    root = make(tmp_path / "tree", {
        name: "*.bin\n", ".gitignore": "*.py\n", "a.py": "", "a.bin": "",
        f"sub/{name}": "!keep.bin\n", "sub/.gitignore": "*\n", "sub/keep.bin": "",
        "sub/other.bin": "", "sub/b.py": "",
    })
    assert list_files(root) == sorted([".gitignore", name, "a.py", "sub/.gitignore",
                                       f"sub/{name}", "sub/b.py", "sub/keep.bin"])


def test_computeignore_wins_over_amlignore(tmp_path: Path) -> None:
    root = make(tmp_path / "tree", {".computeignore": "*.a\n", ".amlignore": "*.b\n",
                                    "x.a": "", "x.b": "", "sub/.amlignore": "*.c\n",
                                    "sub/x.c": ""})
    assert list_files(root) == [".amlignore", ".computeignore", "sub/.amlignore", "sub/x.c",
                                "x.b"]


def test_always_excluded_folders(tmp_path: Path) -> None:
    root = make(tmp_path / "tree", {
        "main.py": "", ".git/config": "", ".jupyter_compute/x": "",
        ".ipynb_checkpoints/a-checkpoint.ipynb": "", "pkg/__pycache__/m.cpython-311.pyc": "",
        "pkg/.ipynb_checkpoints/b": "", "pkg/m.py": "", "outputs/model.pt": "",
        "sub/outputs/x": "", "pkg/.git": "gitdir: elsewhere",
    })
    assert list_files(root) == ["main.py", "pkg/m.py", "sub/outputs/x"]


# -- store, stats, cache ---------------------------------------------------------------


def test_first_snapshot_stores_every_file_as_its_exact_bytes(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"a.py": "print(1)\n", "data/b.csv": "1,2\n",
                                  "empty": ""})
    (src / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024))  # streamed, not read whole
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    ws = tmp_path / "ws"
    s = snap(src, ws)
    store = BlobStore(ws / "blobs")
    assert list(s.files) == sorted(s.files) == ["a.py", "big.bin", "data/b.csv", "empty",
                                                "run.sh"]
    for rel, (digest, size, mode) in s.files.items():
        data = (src / rel).read_bytes()
        assert digest == hashlib.sha256(data).hexdigest() and size == len(data)
        assert mode == (src / rel).stat().st_mode & 0o777
        assert store.has(digest) and store.path(digest).read_bytes() == data
        assert store.path(digest) == ws / "blobs" / "sha256" / digest[:2] / digest
    assert s.files["run.sh"][2] == 0o755
    total = sum(size for _, size, _ in s.files.values())
    assert (s.stats.files, s.stats.bytes, s.stats.new_files, s.stats.new_bytes) == (
        5, total, 5, total)
    assert s.source_dir == str(src) and s.git is None and s.warnings == []
    assert not list((ws / "blobs").rglob(".tmp-*"))


def test_unchanged_and_one_changed_file(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {f"m{i}.py": f"x = {i}\n" for i in range(20)})
    age_tree(src)
    ws = tmp_path / "ws"
    first = snap(src, ws)
    again = snap(src, ws)
    assert again.id == first.id and again.files == first.files
    assert (again.stats.new_files, again.stats.new_bytes) == (0, 0)
    assert again.stats.files == 20

    (src / "m3.py").write_text("x = 'changed'\n")
    changed = snap(src, ws)
    assert changed.id != first.id
    assert (changed.stats.new_files, changed.stats.new_bytes) == (1, len("x = 'changed'\n"))
    assert len(blobs(ws)) == 21


def test_equal_content_is_stored_once(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"a.txt": "same", "b/c.txt": "same", "d.txt": "other"})
    ws = tmp_path / "ws"
    s = snap(src, ws)
    assert (s.stats.files, s.stats.new_files, s.stats.new_bytes) == (3, 2, 9)
    assert len(blobs(ws)) == 2
    # content another folder already stored is not new either
    other = make(tmp_path / "other", {"copy.txt": "other", "new.txt": "fresh"})
    s2 = snap(other, ws)
    assert (s2.stats.new_files, s2.stats.new_bytes) == (1, 5)


def test_same_content_gives_same_id_anywhere(tmp_path: Path) -> None:
    spec = {"a.py": "1", "pkg/b.py": "2"}
    one = snap(make(tmp_path / "one", spec), tmp_path / "ws1")
    two = snap(make(tmp_path / "two", spec), tmp_path / "ws2")
    assert one.id == two.id
    (tmp_path / "two" / "pkg" / "b.py").chmod(0o700)
    assert snap(tmp_path / "two", tmp_path / "ws2").id != one.id  # mode is content too


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    first = snap(tmp_path / "src", tmp_path / "ws")
    assert first.id == hashlib.sha256(b"").hexdigest() and first.files == {}
    assert load_manifest(tmp_path / "ws", first.id)["files"] == {}
    assert snap(tmp_path / "src", tmp_path / "ws").parent == first.id


def test_deleted_renamed_and_chmodded_files(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"a.py": "a", "b.py": "b", "c.py": "c"})
    age_tree(src)
    ws = tmp_path / "ws"
    snap(src, ws)
    (src / "a.py").unlink()
    (src / "b.py").rename(src / "renamed.py")
    (src / "c.py").chmod(0o700)
    s = snap(src, ws)
    assert sorted(s.files) == ["c.py", "renamed.py"]
    assert s.files["c.py"][2] == 0o700
    assert s.stats.new_files == 0


def test_stat_cache_does_not_reread_unchanged_files(tmp_path: Path) -> None:
    # An edit that keeps size, mtime and inode is invisible to the stat cache (as to
    # git): seeing the *old* digest proves the file was not read again.
    src = make(tmp_path / "src", {"model.py": "weights = 1\n", "other.py": "x"})
    age_tree(src)
    ws = tmp_path / "ws"
    first = snap(src, ws)
    path = src / "model.py"
    before = path.stat()
    with open(path, "r+b") as f:  # in place: same inode
        f.write(b"weights = 2\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_ino == before.st_ino
    again = snap(src, ws)
    assert again.files["model.py"] == first.files["model.py"]
    assert again.id == first.id

    # any stat change (here the mtime) makes it read the file again
    age(path, HOUR_NS // 2)
    third = snap(src, ws)
    assert third.files["model.py"][0] == hashlib.sha256(b"weights = 2\n").hexdigest()
    assert third.stats.new_files == 1


def test_racy_file_is_hashed_again(tmp_path: Path) -> None:
    # Written just now, its mtime may not move on a second write within the clock's
    # granularity, so the cache must not vouch for it (git's "racy clean" problem).
    src = make(tmp_path / "src", {"fresh.py": "v = 1\n"})
    ws = tmp_path / "ws"
    snap(src, ws)
    path = src / "fresh.py"
    before = path.stat()
    with open(path, "r+b") as f:
        f.write(b"v = 2\n")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = snap(src, ws)
    assert again.files["fresh.py"][0] == hashlib.sha256(b"v = 2\n").hexdigest()
    assert again.stats.new_files == 1


def test_ignore_rule_changes_apply_even_with_same_size_and_mtime(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {".gitignore": "*.aaa\n", "x.aaa": "", "x.bbb": ""})
    age_tree(src)
    ws = tmp_path / "ws"
    assert sorted(snap(src, ws).files) == [".gitignore", "x.bbb"]
    gi = src / ".gitignore"
    before = gi.stat()
    gi.write_text("*.bbb\n")
    os.utime(gi, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert sorted(snap(src, ws).files) == [".gitignore", "x.aaa"]


def test_cached_ignore_rules_do_not_import_pathspec(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {".gitignore": "*.log\n", "sub/.gitignore": "!a.log\n",
                                  "a.log": "", "sub/a.log": "", "m.py": ""})
    ws = tmp_path / "ws"
    code = textwrap.dedent(f"""
        import sys
        from jupyter_compute.snapshot import take_snapshot
        s = take_snapshot({str(src)!r}, {str(ws)!r}, with_git=False)
        print(sorted(s.files), "pathspec" in sys.modules)
    """)
    runs = [subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                           text=True).stdout.strip() for _ in range(2)]
    files = "['.gitignore', 'm.py', 'sub/.gitignore', 'sub/a.log']"
    assert runs == [f"{files} True", f"{files} False"]


def test_extra_files_join_the_snapshot(tmp_path: Path) -> None:
    # how a %%submit cell travels: bytes that are not in the folder
    src = make(tmp_path / "src", {"lib.py": "x = 1\n", "__cell__.py": "old"})
    age_tree(src)
    ws = tmp_path / "ws"
    cell = {"__cell__.py": b"import lib\nprint(lib.x)\n"}
    s = take_snapshot(src, ws, with_git=False, extra_files=cell)
    digest = hashlib.sha256(cell["__cell__.py"]).hexdigest()
    assert s.files["__cell__.py"] == (digest, len(cell["__cell__.py"]), 0o644)
    assert BlobStore(ws / "blobs").path(digest).read_bytes() == cell["__cell__.py"]
    assert (src / "__cell__.py").read_text() == "old"  # the folder is left alone
    assert (s.stats.files, s.stats.new_files) == (2, 2)  # the folder's copy is not stored
    again = take_snapshot(src, ws, with_git=False, extra_files=cell)
    assert again.id == s.id and again.stats.new_files == 0
    without = take_snapshot(src, ws, with_git=False)
    assert without.id != s.id and without.files["__cell__.py"][1] == 3
    assert take_snapshot(src, ws, with_git=False, extra_files={"sub/c.py": b""}).files[
        "sub/c.py"][1] == 0


@pytest.mark.parametrize("rel", ["/abs.py", "../up.py", "a//b.py", "./a.py", "lib.py/x.py",
                                 "pkg"])
def test_extra_files_need_a_clean_relative_path(tmp_path: Path, rel: str) -> None:
    src = make(tmp_path / "src", {"lib.py": "x", "pkg/m.py": "m"})
    with pytest.raises(SnapshotError, match="extra file"):
        take_snapshot(src, tmp_path / "ws", with_git=False, extra_files={rel: b"x"})
    assert not (tmp_path / "ws").exists()


# -- manifest and parent ---------------------------------------------------------------


def test_manifest_contents(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"a.py": "a", "b/c.txt": "cc"})
    ws = tmp_path / "ws"
    s = snap(src, ws)
    assert s.manifest_path == str(ws / "snapshots" / f"{s.id}.json")
    m = load_manifest(ws, s.id)
    assert set(m) == {"id", "parent", "created", "source_dir", "files", "stats", "git"}
    assert m["id"] == s.id and m["parent"] is None and m["source_dir"] == str(src)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", m["created"])
    assert m["files"] == {k: list(v) for k, v in s.files.items()}
    assert m["stats"] == {"files": 2, "bytes": 3, "new_files": 2, "new_bytes": 3}
    assert m["git"] is None
    with pytest.raises(SnapshotError, match="no snapshot"):
        load_manifest(ws, "0" * 64)


def test_manifest_rewritten_only_when_missing(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"a.py": "a"})
    ws = tmp_path / "ws"
    s = snap(src, ws)
    manifest = Path(s.manifest_path)
    created = json.loads(manifest.read_text())["created"]
    snap(src, ws)
    assert json.loads(manifest.read_text())["created"] == created
    manifest.unlink()
    snap(src, ws)
    assert json.loads(manifest.read_text())["id"] == s.id


def test_parent_chain_per_source_folder(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"a.py": "1"})
    ws = tmp_path / "ws"
    first = snap(src, ws)
    assert first.parent is None
    (src / "a.py").write_text("2")
    second = snap(src, ws)
    assert second.parent == first.id
    third = snap(src, ws)
    assert third.id == second.id and third.parent == second.id
    assert load_manifest(ws, second.id)["parent"] == first.id
    other = snap(make(tmp_path / "other", {"b.py": "1"}), ws)
    assert other.parent is None


# -- limits ----------------------------------------------------------------------------


def test_size_limit_names_largest_files_and_writes_nothing(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"train.py": "x" * 100, "data/small.csv": "y" * 1000})
    (src / "data" / "big.bin").write_bytes(b"\0" * 3 * 1024 * 1024)
    ws = tmp_path / "ws"
    with pytest.raises(SnapshotLimitError) as err:
        snap(src, ws, max_bytes=1024 * 1024)
    msg = str(err.value)
    assert "\n" not in msg
    assert "3.0 MiB" in msg and "over the 1.0 MiB limit" in msg
    assert "data/big.bin (3.0 MiB)" in msg
    assert "add 'data/' to .gitignore" in msg
    assert "snapshot_max_mb" in msg and "JUPYTER_COMPUTE_SNAPSHOT_MAX_MB" in msg
    assert err.value.largest[0] == ("data/big.bin", 3 * 1024 * 1024)
    assert [p for p, _ in err.value.largest] == ["data/big.bin", "data/small.csv", "train.py"]
    assert not (ws / "blobs").exists() and not (ws / "snapshots").exists()


def test_size_limit_suggests_the_file_at_root_and_the_ignore_file_in_use(
        tmp_path: Path) -> None:
    src = make(tmp_path / "src", {".amlignore": "", "a.py": "a"})
    (src / "model.ckpt").write_bytes(b"\0" * 2048)
    with pytest.raises(SnapshotLimitError, match=r"add 'model\.ckpt' to \.amlignore"):
        snap(src, tmp_path / "ws", max_bytes=1024)


def test_changed_files_limit_counts_new_content_only(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {f"gen/f{i}.txt": str(i) for i in range(6)})
    (src / "a.py").write_text("a")
    ws = tmp_path / "ws"
    with pytest.raises(SnapshotLimitError) as err:
        snap(src, ws, max_changed_files=3)
    msg = str(err.value)
    assert "7 new or changed files, over the 3-file limit" in msg
    assert "add 'gen/' to .gitignore" in msg
    assert "snapshot_max_files" in msg and "JUPYTER_COMPUTE_SNAPSHOT_MAX_FILES" in msg
    assert not (ws / "blobs").exists() and not (ws / "snapshots").exists()

    age_tree(src)
    first = snap(src, ws, max_changed_files=7)  # exactly at the limit is fine
    (src / "a.py").write_text("b")
    (src / "copy.txt").write_text("0")  # same content as gen/f0.txt: not new
    again = snap(src, ws, max_changed_files=1)
    assert again.stats.new_files == 1 and again.parent == first.id


def test_limit_error_on_a_later_snapshot_leaves_the_store_untouched(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"a.py": "a"})
    ws = tmp_path / "ws"
    snap(src, ws)
    stored, manifests = blobs(ws), sorted((ws / "snapshots").iterdir())
    (src / "huge.bin").write_bytes(b"\1" * 4096)
    with pytest.raises(SnapshotLimitError):
        snap(src, ws, max_bytes=1000)
    assert blobs(ws) == stored and sorted((ws / "snapshots").iterdir()) == manifests


def test_public_constants() -> None:
    assert DEFAULT_MAX_BYTES == 300 * 1024 * 1024 and DEFAULT_MAX_CHANGED_FILES == 2000
    assert LINK_MODE == stat.S_IFLNK | 0o777
    assert set(snapshot_module.__all__) == {
        "ALWAYS_EXCLUDED_DIRS", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_CHANGED_FILES", "LINK_MODE",
        "BlobStore", "GitInfo", "Snapshot", "SnapshotStats", "git_info", "list_files",
        "load_manifest", "take_snapshot"}


# -- symlinks, special files, errors ---------------------------------------------------


def test_symlinks_inside_are_kept_as_links_outside_are_skipped(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"a.py": "a", "pkg/m.py": "m"})
    (tmp_path / "secret").write_text("s")
    (src / "link.py").symlink_to("a.py")
    (src / "pkglink").symlink_to("pkg")  # a folder link: recorded, never walked into
    (src / "out").symlink_to(tmp_path / "secret")
    (src / "dangling").symlink_to("nowhere")
    ws = tmp_path / "ws"
    s = snap(src, ws)
    assert sorted(s.files) == ["a.py", "link.py", "pkg/m.py", "pkglink"]
    store = BlobStore(ws / "blobs")
    for rel, text in (("link.py", b"a.py"), ("pkglink", b"pkg")):
        digest, size, mode = s.files[rel]
        assert mode == LINK_MODE and size == len(text)
        assert store.path(digest).read_bytes() == text
    assert f"skipped symlink out -> {tmp_path / 'secret'}: it points outside the source " \
           "folder" in s.warnings
    assert any(w.startswith("skipped symlink dangling -> nowhere") for w in s.warnings)
    assert len(s.warnings) == 2
    assert list_files(src) == sorted(s.files)


def test_special_files_are_skipped_silently(tmp_path: Path) -> None:
    src = make(tmp_path / "src", {"a.py": "a"})
    os.mkfifo(src / "pipe")
    s = snap(src, tmp_path / "ws")
    assert list(s.files) == ["a.py"] and s.warnings == []


def test_missing_or_non_folder_source(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="does not exist") as err:
        snap(tmp_path / "nope", tmp_path / "ws")
    assert "\n" not in str(err.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SnapshotError, match="is not a folder"):
        snap(tmp_path / "file", tmp_path / "ws")
    with pytest.raises(SnapshotError, match="does not exist"):
        list_files(tmp_path / "nope")


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    # root reads anything, so as root the snapshot runs as 'nobody' in a subprocess
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        src = make(base / "src", {"ok.py": "ok", "sub/secret.key": "k"})
        (src / "sub" / "secret.key").chmod(0)
        ws = base / "ws"
        ws.mkdir(mode=0o777)
        ws.chmod(0o777)
        code = textwrap.dedent(f"""
            from jupyter_compute.exceptions import SnapshotError
            from jupyter_compute.snapshot import take_snapshot
            try:
                take_snapshot({str(src)!r}, {str(ws)!r}, with_git=False)
            except SnapshotError as exc:
                print(exc)
        """)
        kw = {"user": 65534} if os.geteuid() == 0 else {}
        # 'nobody' may not reach this venv's interpreter; a system one then, on our code
        env = {**os.environ, "PYTHONPATH": str(Path(snapshot_module.__file__).parents[1])}
        out = None
        for python in [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"]:
            try:
                out = subprocess.run([python, "-c", code], capture_output=True, text=True,
                                     check=True, cwd=base, env=env, **kw).stdout
                break
            except (OSError, subprocess.CalledProcessError):
                continue
        assert out is not None, ("no interpreter ran as 'nobody': "
                                 "scripts/install-test-deps.sh installs /usr/bin/python3")
        assert out.strip() == f"cannot read sub/secret.key in {src}: Permission denied"
    finally:
        shutil.rmtree(base)


# -- git -------------------------------------------------------------------------------


def test_git_info_branch_commit_dirty_remote(tmp_path: Path) -> None:
    repo = make(tmp_path / "repo", {"train.py": "x", "sub/m.py": "m"})
    git(repo, "init", "-q")
    assert git_info(repo) == GitInfo(repository=None, branch="main", commit=None,
                                      dirty=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    head = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "remote", "add", "origin", "https://example.com/team/proj.git")
    info = GitInfo(repository="https://example.com/team/proj.git", branch="main",
                   commit=head, dirty=False)
    assert git_info(repo) == info
    assert git_info(repo / "sub") == info  # from a subfolder of the work tree

    # the workspace inside the project does not count; an untracked file does
    ws = repo / ".jupyter_compute"
    s = take_snapshot(repo, ws)
    assert s.git == info
    assert load_manifest(ws, s.id)["git"] == info.to_dict()
    (repo / "notes.txt").write_text("untracked")
    assert take_snapshot(repo, ws).git == GitInfo(info.repository, "main", head, True)

    git(repo, "checkout", "-q", "--detach")
    assert git_info(repo).branch is None


def test_jupyterlab_checkpoints_and_outputs_leave_a_clean_tree_clean(project) -> None:
    # JupyterLab writes .ipynb_checkpoints/ beside every notebook it saves; a run writes
    # outputs/. Neither is snapshotted, so neither makes a submit from JupyterLab "dirty".
    project.write("train.py", "print('hi')\n")
    project.write("nb/analysis.ipynb", "{}\n")
    git(project.root, "init", "-q")
    git(project.root, "add", "train.py", "nb")
    git(project.root, "commit", "-q", "-m", "first")
    head = git(project.root, "rev-parse", "HEAD").strip()
    project.write(".ipynb_checkpoints/x-checkpoint.ipynb", "{}\n")
    project.write("nb/.ipynb_checkpoints/analysis-checkpoint.ipynb", "{}\n")
    project.write("outputs/y", "result\n")

    def submitted_git() -> dict:
        out = project.cli("submit", "train.py", "--wait")
        assert out.returncode == 0, out.stderr
        return project.show(out.stderr.split()[1])["git"]

    assert submitted_git() == {"repository": None, "branch": "main", "commit": head,
                               "dirty": False}
    project.write("train.py", "print('changed')\n")  # a real change still counts
    assert submitted_git()["dirty"] is True


def test_no_git_info_outside_git_or_when_not_asked(tmp_path: Path) -> None:
    src = make(tmp_path / "plain", {"a.py": "a"})
    assert git_info(src) is None
    assert take_snapshot(src, tmp_path / "ws").git is None
    git(src, "init", "-q")
    assert take_snapshot(src, tmp_path / "ws", with_git=False).git is None
    assert take_snapshot(src, tmp_path / "ws").git is not None


# -- concurrency -----------------------------------------------------------------------

WORKER = """
import sys
from jupyter_compute.snapshot import take_snapshot
s = take_snapshot(sys.argv[1], sys.argv[2], with_git=False)
print(s.id)
"""


def test_concurrent_snapshots_into_one_workspace(tmp_path: Path) -> None:
    rng = random.Random(7)
    shared = {f"lib/m{i}.py": "x" * rng.randint(0, 5000) + str(i) for i in range(150)}
    a = make(tmp_path / "a", {**shared, "a.py": "a"})
    b = make(tmp_path / "b", {**shared, "b.py": "b"})
    (a / "big.bin").write_bytes(os.urandom(9 * 1024 * 1024))
    shutil.copy(a / "big.bin", b / "big.bin")
    ws = tmp_path / "ws"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(src), str(ws)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for src in [a, b] * 10]
    results = [p.communicate() + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in results] == [0] * 20, [err for _, err, _ in results]
    ids = [out.strip() for out, _, _ in results]
    assert len(set(ids[0::2])) == 1 and len(set(ids[1::2])) == 1

    for blob in blobs(ws):
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    for snap_id in set(ids):
        for digest, size, _ in load_manifest(ws, snap_id)["files"].values():
            assert BlobStore(ws / "blobs").path(digest).stat().st_size == size
    assert len(blobs(ws)) == 150 + 3
    assert not [p for p in ws.rglob(".tmp-*")]


def test_a_snapshot_for_a_remote_host_hashes_new_files_without_storing_them(
        tmp_path: Path) -> None:
    """``store_blobs=False`` (an ssh target sends new files from the source folder):
    no blob is written, each new digest names a source file with those bytes, and the
    stat cache does not vouch for them, so a later snapshot that stores reads them."""
    src, ws = tmp_path / "src", tmp_path / "ws"
    (src / "sub").mkdir(parents=True)
    (src / "a.py").write_text("print('a')\n")
    (src / "sub" / "b.txt").write_text("b\n")
    (src / "same.txt").write_text("b\n")  # one blob for two files
    remote = take_snapshot(src, ws, with_git=False, store_blobs=False)
    store = BlobStore(ws / "blobs")
    assert remote.stats.new_files == 2
    assert all(not store.has(d) for d, _size, _mode in remote.files.values())
    assert set(remote.sources) == {d for d, _size, _mode in remote.files.values()}
    for digest, path in remote.sources.items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest

    local = take_snapshot(src, ws, with_git=False)  # as a local target would
    assert local.id == remote.id and local.sources == {}
    assert all(store.has(d) for d, _size, _mode in local.files.values())
    again = take_snapshot(src, ws, with_git=False, store_blobs=False)
    assert again.id == remote.id and again.sources == {} and again.stats.new_files == 0
