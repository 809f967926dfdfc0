"""``jupyter compute demo`` from a built wheel, installed read-only, as a new user runs it.

The wheel is built from this checkout (without the sidebar's JavaScript build), installed
in a fresh venv whose site-packages then loses its write bits. As root, which writes
anyway, the commands run as 'nobody' so that the read-only install is real.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
AS_ROOT = os.geteuid() == 0


def tree_state(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under ``root`` with its mode, size and mtime: any write changes it."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            st = (Path(folder) / name).lstat()
            rel = os.path.relpath(os.path.join(folder, name), root)
            state[rel] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return state


def set_writable(root: Path, writable: bool) -> None:
    for folder, dirs, files in os.walk(root):
        for path in [Path(folder), *(Path(folder) / n for n in dirs + files)]:
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IWUSR if writable
                       else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.fixture
def base() -> Iterator[Path]:
    # not under tmp_path: 'nobody' must reach it (pytest's temp root is 0700)
    path = Path(tempfile.mkdtemp(prefix="jc-demo-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        set_writable(path, True)
        shutil.rmtree(path)


def test_demo_from_a_read_only_wheel_install_then_runs_lists_it(base: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "JUPYTER_COMPUTE_WORKSPACE", "VIRTUAL_ENV")}
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(base / "dist"), str(REPO)],
                           env={**env, "SKIP_JUPYTER_BUILDER": "1"},
                           capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    [wheel] = (base / "dist").glob("jupyter_compute-*.whl")

    # as root, a venv 'nobody' can run: this one's interpreter may live under /root
    python = "/usr/bin/python3" if AS_ROOT else sys.executable
    assert os.access(python, os.X_OK), "scripts/install-test-deps.sh installs /usr/bin/python3"
    venv = base / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True, env=env)
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"),
                                "install", "-q", "--no-deps", str(wheel), "pyyaml", "pathspec"],
                               env=env, capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    [site] = venv.glob("lib/python3*/site-packages")
    assert (site / "jupyter_compute" / "examples" / "train.py").is_file()
    set_writable(site, False)
    before = tree_state(site)

    here = base / "work"
    here.mkdir()
    here.chmod(0o777)  # the user's own folder
    kw = {"user": 65534, "group": 65534} if AS_ROOT else {}
    env.update(HOME=str(here))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(venv / "bin" / "jupyter-compute"), *args], cwd=here,
                              env=env, capture_output=True, text=True, timeout=60, **kw)

    demo = cli("demo")
    assert demo.returncode == 0, demo.stderr
    assert "epoch 5/5" in demo.stdout and "outputs: model.json" in demo.stdout
    copy = here / "jupyter-compute-demo"
    assert f"the example is in {copy}" in demo.stderr  # it says where
    assert f"its runs are in {here / '.jupyter_compute'}" in demo.stderr
    assert (copy / "train.py").read_bytes() == (
        site / "jupyter_compute" / "examples" / "train.py").read_bytes()
    run_id = demo.stdout.split("run ", 1)[1].split()[0]

    runs = cli("runs", "--json")
    assert runs.returncode == 0, runs.stderr
    assert [(r["id"], r["name"], r["status"]) for r in json.loads(runs.stdout)] == [
        (run_id, "demo", "Completed")]
    assert run_id in cli("runs").stdout

    # a second demo reuses the copy (kept as the user edited it) and the same workspace
    (copy / "train.py").write_text((copy / "train.py").read_text().replace(
        "saved outputs/", "edited: saved outputs/"))
    again = cli("demo")
    assert again.returncode == 0, again.stderr
    assert "edited: saved outputs/model.json" in again.stdout
    assert len(json.loads(cli("runs", "--json").stdout)) == 2

    assert tree_state(site) == before  # nothing written under the installed package
    assert not list(site.rglob(".jupyter_compute"))
