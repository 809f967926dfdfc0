"""A real Spark standalone cluster for the spark tests and benchmark: the embedded
cluster of one workspace, started once per session and stopped at its end.

::

    def test_x(spark_project):          # the session's workspace, `spark` running
        api.submit("job.py", target="spark")

Starting it costs ~20-40 s here (two JVMs); each spark-submit 25-50 s, so the tests
share this one cluster and submit few runs. Stopping it touches only the JVMs it
started (recorded by pid and start time) and theirs (executors), and the fixture
fails if any is left.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from collections.abc import Iterator

import pytest

from conftest import Project

CLUSTER = "spark"
IDLE_SECONDS = 5  # short, so executors are seen going away within a test


def unavailable() -> str | None:
    """Why the spark tests cannot run here, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed: pip install -e '.[test]'"
    if shutil.which("java") is None:
        return "Java is missing: scripts/install-test-deps.sh installs openjdk-17-jre-headless"
    return None


class SparkProject(Project):
    """A project whose workspace has the embedded ``spark`` target attached and running."""

    def target(self, name: str = CLUSTER):  # -> SparkTarget
        from jupyter_compute import api

        return api.get_target(name, self.root)

    def wait_executors(self, predicate, timeout: float = 120) -> dict:
        """Poll the executors until ``predicate(nodes)``; the counts that satisfied it."""
        target = self.target()
        deadline = time.monotonic() + timeout
        while True:
            nodes = target.launcher.nodes(max_age=0)
            if predicate(nodes):
                return nodes
            if time.monotonic() > deadline:
                raise AssertionError(f"executors never satisfied the condition; last: {nodes}")
            time.sleep(0.5)


@pytest.fixture(scope="session")
def spark_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkProject]:
    """The session's workspace with ``spark`` (one worker: 2 cores, 1 GiB) started."""
    reason = unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    from jupyter_compute import api

    root = tmp_path_factory.mktemp("spark") / "proj"
    (root / ".jupyter_compute").mkdir(parents=True)
    project = SparkProject(root)
    api.attach(CLUSTER, "spark", workspace=root, max_executors=2, executor_memory="512m",
               executor_cores=1, driver_memory="600m", conf=["spark.jc.probe=from-attach"],
               worker_cores=2, worker_memory="1g", idle_seconds=IDLE_SECONDS)
    target = project.target()
    target.start()
    try:
        yield project
    finally:
        target = project.target()
        target.stop()
        left = target.launcher.cluster().processes()
        assert not left, f"the embedded Spark cluster left processes behind: {left}"


@pytest.fixture
def spark_project(spark_session: SparkProject, monkeypatch: pytest.MonkeyPatch
                  ) -> SparkProject:
    """The session's Spark workspace as the current folder (the ``project`` pattern)."""
    monkeypatch.chdir(spark_session.root)
    monkeypatch.delenv("JUPYTER_COMPUTE_WORKSPACE", raising=False)
    return spark_session
