"""Shared fixtures: a project folder with its own workspace, and the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel import Kernel

CLI = str(Path(sys.executable).with_name("jupyter-compute"))


class Project:
    """A source folder (the current folder during the test) with a workspace in it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def cli(self, *args: str, timeout: float = 120, cwd: Path | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=cwd or self.root, env={**os.environ, **(env or {})})

    def submit(self, *args: str, **kw) -> str:
        """Submit without waiting; return the run id (the last line printed)."""
        out = self.cli("submit", *args, **kw)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def show(self, run_id: str) -> dict:
        out = self.cli("show", run_id, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def run_dir(self, run_id: str) -> Path:
        return self.root / ".jupyter_compute" / "runs" / run_id


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    root = tmp_path / "proj"
    (root / ".jupyter_compute").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.delenv("JUPYTER_COMPUTE_WORKSPACE", raising=False)
    return Project(root)


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (PID 1 here is slow to reap orphans)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def kernel(project: Project) -> Iterator[Kernel]:
    """A real IPython kernel in the project folder, with the extension loaded."""
    k = Kernel(project.root)
    out = k.run("%load_ext jupyter_compute")
    assert out.status == "ok", out.error_text
    yield k
    k.shutdown()


# The session's Ray, Slurm and Spark clusters, declared here once so every test module
# shares one of each (a fixture imported into two test modules would start twice).
from raycluster import ray_project, ray_session, separate_head  # noqa: E402, F401
from slurmcluster import slurm_project, slurm_session  # noqa: E402, F401
from sparkcluster import spark_project, spark_session  # noqa: E402, F401
