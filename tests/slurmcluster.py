"""A real embedded Slurm cluster for the slurm tests and benchmark, once per session.

::

    def test_x(slurm_project):          # the session's workspace, hpc running
        api.submit("t.py", target="hpc")

munge, slurmctld and the CLOUD nodes' slurmds are started by the project's own code
(``targets/slurm/cluster.py``), exactly as a user's first run starts them, and
stopped at the end of the session, which checks that nothing of it is left. Its
nodes power down after ``IDLE_SECONDS``: short, so the scale-down test sees it, and
long enough that consecutive tests reuse a node that is up (a power-up costs ~1 s).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Project

CLUSTER = "hpc"
IDLE_SECONDS = 20
MAX_NODES = 2


def unavailable() -> str | None:
    """Why the slurm tests cannot run here, or None."""
    for exe in ("slurmctld", "slurmd", "munged", "sbatch"):
        if shutil.which(exe) is None and not os.path.exists(f"/usr/sbin/{exe}"):
            return f"{exe} is missing: run scripts/install-test-deps.sh"
    if not sys.platform.startswith("linux"):
        return "the embedded cluster's process bookkeeping reads /proc (Linux only)"
    return None


class SlurmProject(Project):
    """A project whose workspace has the embedded ``hpc`` cluster attached."""

    def target(self, name: str = CLUSTER):  # -> SlurmTarget
        from jupyter_compute import api

        return api.get_target(name, self.root)

    def wait_nodes(self, predicate, timeout: float = 120, name: str = CLUSTER) -> dict:
        """Poll ``nodes()`` until ``predicate(nodes)``; returns the counts that satisfied it."""
        target = self.target(name)
        deadline = time.monotonic() + timeout
        while True:
            nodes = target.launcher.nodes(target.host, max_age=0)
            if predicate(nodes):
                return nodes
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes never satisfied the condition; last: {nodes}")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def slurm_session() -> Iterator[SlurmProject]:
    """The session's workspace, with ``hpc`` (0-2 CLOUD nodes) started."""
    reason = unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    from jupyter_compute import api

    # Not pytest's tmp dirs (0700 root): the SSH login test's user reads the cluster's
    # slurm.conf and reaches its munge socket under the workspace.
    base = Path(tempfile.mkdtemp(prefix="jc-slurm-ws-"))
    base.chmod(0o755)
    root = base / "proj"
    (root / ".jupyter_compute").mkdir(parents=True)
    project = SlurmProject(root)
    api.attach(CLUSTER, "slurm", workspace=root, max_nodes=MAX_NODES,
               idle_seconds=IDLE_SECONDS)
    target = project.target()
    target.start()
    try:
        yield project
    finally:
        target = project.target()
        cluster = target.launcher.cluster()
        state = cluster.load()
        target.stop()
        left = cluster.processes(state) if state else []
        assert not left, f"the embedded Slurm cluster left processes behind: {left}"
        shutil.rmtree(cluster.folder, ignore_errors=True)  # maybe /tmp/jc-slurm-<hash>
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def slurm_project(slurm_session: SlurmProject, monkeypatch: pytest.MonkeyPatch
                  ) -> SlurmProject:
    """The session's Slurm workspace as the current folder (the ``project`` pattern)."""
    monkeypatch.chdir(slurm_session.root)
    monkeypatch.delenv("JUPYTER_COMPUTE_WORKSPACE", raising=False)
    return slurm_session


def folder_of(project: SlurmProject) -> Path:
    return Path(project.target().launcher.cluster().folder)
