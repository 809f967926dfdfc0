"""Real Ray clusters for the ray tests and benchmark: one embedded cluster per session,
and a head started separately, as a user would, that our code must leave alone.

::

    def test_x(ray_project):           # the session's workspace, cpu-cluster running
        api.submit("t.py", target="cpu-cluster")

    def test_y(separate_head):         # http://127.0.0.1:PORT of a plain `ray start --head`
        ...

Both start once per session (~10-30 s each here) and stop at its end, touching only
their own processes: those `ray start` started (recorded by pid and start time),
those whose command line names their temp dir, and their descendants
(``owned_processes``). ``ray stop`` is never run: it would end
every Ray process on the machine, other people's included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import Project

CLUSTER = "cpu-cluster"
IDLE_SECONDS = 5  # short, so scale-down is seen within a test


def unavailable() -> str | None:
    """Why the ray tests cannot run here, or None."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed: pip install -e '.[test]'"
    if not sys.platform.startswith("linux"):
        return "the embedded cluster's process bookkeeping reads /proc (Linux only)"
    return None


class RayProject(Project):
    """A project whose workspace has the embedded ``cpu-cluster`` attached."""

    def target(self, name: str = CLUSTER):  # -> RayTarget
        from jupyter_compute import api

        return api.get_target(name, self.root)

    def wait_nodes(self, predicate, timeout: float = 90, name: str = CLUSTER) -> dict:
        """Poll ``nodes()`` until ``predicate(nodes)``; returns the counts that satisfied it."""
        target = self.target(name)
        deadline = time.monotonic() + timeout
        while True:
            nodes = target.launcher.nodes(max_age=0)  # the cluster's word now, not a cache
            if predicate(nodes):
                return nodes
            if time.monotonic() > deadline:
                raise AssertionError(f"nodes never satisfied the condition; last: {nodes}")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayProject]:
    """The session's workspace, with ``cpu-cluster`` (0-2 nodes of 1 CPU) started."""
    reason = unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    from jupyter_compute import api

    root = tmp_path_factory.mktemp("ray") / "proj"
    (root / ".jupyter_compute").mkdir(parents=True)
    project = RayProject(root)
    api.attach(CLUSTER, "ray", workspace=root, min_nodes=0, max_nodes=2, node_cpus=1,
               idle_seconds=IDLE_SECONDS)
    target = project.target()
    target.start()
    try:
        yield project
    finally:
        target = project.target()
        target.stop()
        left = target.cluster().processes()
        target.cluster().stop(remove_files=True)  # its temp dir lies outside tmp_path
        assert not left, f"the embedded cluster left processes behind: {left}"


@pytest.fixture
def ray_project(ray_session: RayProject, monkeypatch: pytest.MonkeyPatch) -> RayProject:
    """The session's Ray workspace as the current folder (the ``project`` pattern)."""
    monkeypatch.chdir(ray_session.root)
    monkeypatch.delenv("JUPYTER_COMPUTE_WORKSPACE", raising=False)
    return ray_session


@dataclass
class SeparateHead:
    """A plain ``ray start --head`` (1 CPU, no autoscaler) that is not ours to stop."""

    address: str
    gcs_port: int
    temp_dir: str
    spawned: list[dict]  # process_identity of what `ray start` started

    def processes(self) -> list[int]:
        from jupyter_compute.targets.ray.cluster import owned_processes

        return owned_processes(self.temp_dir, self.spawned)


@pytest.fixture(scope="session")
def separate_head() -> Iterator[SeparateHead]:
    """A Ray head started the way a user starts one, on its own ports and temp dir."""
    reason = unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    from jupyter_compute.targets.ray.cluster import (
        end_processes,
        free_ports,
        ray_executable,
        startup_timed_out,
        wait_recording,
    )

    temp = f"/tmp/jc-ext-{os.getpid()}"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    log = Path(f"{temp}.log")
    log.unlink(missing_ok=True)
    # Once more on fresh ports when Ray's fixed 30 s wait for the raylet ran out (a
    # loaded machine), as the embedded cluster's own start does.
    for attempt in (1, 2):
        gcs, dashboard, client, agent = free_ports(4)
        cmd = [ray_executable(), "start", "--head", "--num-cpus=1", f"--port={gcs}",
               f"--temp-dir={temp}", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dashboard}", f"--ray-client-server-port={client}",
               f"--dashboard-agent-listen-port={agent}", "--object-store-memory=160000000",
               "--disable-usage-stats"]
        with open(log, "ab") as out:
            since = out.tell()
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
            code, spawned = wait_recording(proc, 240)
        if code == 0 or attempt == 2 or not startup_timed_out(log, since):
            break
        end_processes(temp, spawned)
    head = SeparateHead(f"http://127.0.0.1:{dashboard}", gcs, temp, spawned)
    try:
        assert code == 0, log.read_text(errors="replace")[-4000:]
        yield head
    finally:
        end_processes(temp, spawned)
        log.unlink(missing_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
