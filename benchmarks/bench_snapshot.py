"""Benchmark snapshots against git on the same tree; prints a table of medians and ratios.

    python benchmarks/bench_snapshot.py                  # 10,000 files, ~100 MB
    python benchmarks/bench_snapshot.py --files 2000 --mb 20 --repeats 3

Rows, each the median of ``--repeats`` runs measured in this process:

- first snapshot (fresh workspace)            vs ``git add -A`` into a fresh repository
- unchanged re-snapshot                        vs ``git status`` on the committed tree
- re-snapshot after one file changed           vs ``git status`` after the same change
- unchanged re-snapshot inside a git work tree (``git_info`` running alongside the walk)

git runs as a subprocess, so its times include process start (~2 ms); the snapshot
runs in-process, as it does in a notebook. Goals: first snapshot <= 0.5x git add,
unchanged re-snapshot <= 1x git status.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from statistics import median

from jupyter_compute.snapshot import take_snapshot

UNLIMITED = {"max_bytes": 1 << 50, "max_changed_files": 1 << 30}
GIT_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com"}


def make_tree(root: str, files: int, total_mb: float, seed: int = 0) -> int:
    """``files`` files summing to ``total_mb``, in nested folders, like a project.

    Most files are small (log-normal, median ~5 KB, half text, half random bytes);
    one in 200 is a large data file, together 40% of the bytes.
    """
    rng = random.Random(seed)
    folders = [""]
    for i in range(max(1, files // 40)):
        parent = rng.choice(folders) if rng.random() < 0.7 else ""
        if parent.count("/") < 4:
            folders.append(f"{parent}dir{i}/")
    for folder in folders:
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    total = total_mb * 1024 * 1024
    n_large = max(1, files // 200)
    small = [rng.lognormvariate(8.5, 1.2) for _ in range(files - n_large)]
    large = [rng.uniform(1, 4) for _ in range(n_large)]
    sizes = ([int(r * total * 0.6 / sum(small)) for r in small]
             + [int(r * total * 0.4 / sum(large)) for r in large])
    rng.shuffle(sizes)
    words = [rng.getrandbits(40).to_bytes(5, "little").hex().encode() for _ in range(500)]
    text = b" ".join(rng.choice(words) for _ in range(200_000))
    written = 0
    for i, size in enumerate(sizes):
        folder = rng.choice(folders)
        if size < 1 << 20 and rng.random() < 0.5:  # code and text: compressible
            start = rng.randrange(0, max(1, len(text) - size))
            data = (text[start:start + size] * (1 + size // len(text)))[:size]
            name = f"{folder}f{i}.py"
        else:  # binary: random
            data = os.urandom(size)
            name = f"{folder}f{i}.bin"
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
        written += size
    with open(os.path.join(root, ".gitignore"), "w") as f:
        f.write("*.tmp\nbuild/\n/scratch\n!keep.tmp\n")
    return written


def git(*args: str, cwd: str, git_dir: str | None = None) -> None:
    cmd = ["git"] + ([f"--git-dir={git_dir}", f"--work-tree={cwd}"] if git_dir else [])
    subprocess.run([*cmd, *args], cwd=cwd, env=GIT_ENV, check=True,
                   stdout=subprocess.DEVNULL)


def clock(fn: Callable[[], object]) -> float:
    """Wall time of one call of ``fn``, in seconds."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def timed(fn: Callable[[], object], repeats: int,
          before: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` in seconds; ``before`` runs untimed ahead of each."""
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        times.append(clock(fn))
    return median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--mb", type=float, default=100.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the temp folder")
    args = parser.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="bench_snapshot_")
    try:
        run(tmp, args.files, args.mb, args.repeats)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: str, files: int, mb: float, repeats: int) -> None:
    src = os.path.join(tmp, "src")
    written = make_tree(src, files, mb)
    print(f"tree: {files} files, {written / 2**20:.1f} MB in {src}")
    # let every mtime age past the racy window, as on a real project
    time.sleep(2.2)
    rows: list[tuple[str, float, str, float]] = []

    # First snapshot vs git add -A, each into a fresh store / repository. Interleaved,
    # flushed before each, and nothing deleted until the end: creating files is most
    # of the cost of both, and the disk's background work would otherwise land on
    # whichever runs next.
    firsts, adds = [], []
    for i in range(repeats):
        os.sync()
        firsts.append(clock(lambda i=i: take_snapshot(src, os.path.join(tmp, f"ws{i}"),
                                                       with_git=False, **UNLIMITED)))
        gitdir = os.path.join(tmp, f"repo{i}.git")
        git("init", "-q", "--bare", gitdir, cwd=tmp)
        git("config", "core.bare", "false", cwd=src, git_dir=gitdir)
        os.sync()
        adds.append(clock(lambda g=gitdir: git("add", "-A", cwd=src, git_dir=g)))
    rows.append(("first snapshot", median(firsts), "git add -A", median(adds)))
    ws, gitdir = os.path.join(tmp, "ws0"), os.path.join(tmp, "repo0.git")

    # unchanged: the store and the repository both hold everything already
    git("commit", "-q", "-m", "bench", cwd=src, git_dir=gitdir)
    git("status", cwd=src, git_dir=gitdir)  # refresh the index once, as a user would
    take_snapshot(src, ws, with_git=False, **UNLIMITED)
    same = timed(lambda: take_snapshot(src, ws, with_git=False, **UNLIMITED), repeats)
    status = timed(lambda: git("status", cwd=src, git_dir=gitdir), repeats)
    rows.append(("unchanged re-snapshot", same, "git status", status))

    # one file changed: a different new content each time
    counter = iter(range(1_000_000))
    victim = os.path.join(src, sorted(f for f in os.listdir(src) if f.endswith(".py"))[0])

    def touch() -> None:
        with open(victim, "ab") as f:
            f.write(f"# change {next(counter)}\n".encode())

    one = timed(lambda: take_snapshot(src, ws, with_git=False, **UNLIMITED), repeats, touch)
    status_one = timed(lambda: git("status", cwd=src, git_dir=gitdir), repeats, touch)
    rows.append(("re-snapshot, 1 file changed", one, "git status, 1 changed", status_one))

    # inside a git work tree: git_info's `git status` runs alongside the walk
    os.replace(gitdir, os.path.join(src, ".git"))
    git("config", "core.bare", "false", cwd=src)
    git("add", "-A", cwd=src)
    git("commit", "-q", "-m", "bench 2", cwd=src)
    git("status", cwd=src)
    take_snapshot(src, ws, **UNLIMITED)
    in_git = timed(lambda: take_snapshot(src, ws, **UNLIMITED), repeats)
    status_in = timed(lambda: git("status", cwd=src), repeats)
    rows.append(("unchanged, in git (with git_info)", in_git, "git status", status_in))

    width = max(len(r[0]) for r in rows)
    print(f"\nmedian of {repeats} runs, {sys.platform}, {os.cpu_count()} CPUs\n")
    print(f"{'snapshot':<{width}}  {'time':>9}   {'baseline':<22} {'time':>9}   ratio")
    for name, ours, base_name, base in rows:
        print(f"{name:<{width}}  {ours * 1000:7.1f}ms   {base_name:<22} {base * 1000:7.1f}ms"
              f"   {ours / base:5.2f}x")


if __name__ == "__main__":
    main()
