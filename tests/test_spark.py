"""The spark target on a real Spark standalone cluster (the session's embedded one).

Every spark-submit costs 25-50 s on this machine, so each test submits few runs and
checks everything a person would look at on them; the runs of one test go at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sparkcluster import CLUSTER, SparkProject

from conftest import pid_alive

JOB = """
import os, sys, time
from pyspark.sql import SparkSession
from jupyter_compute.tracking import get_run
import shapes  # a package of the snapshot: the executors get it through --py-files

release = sys.argv[1]
spark = SparkSession.builder.getOrCreate()  # master and conf come from spark-submit
sc = spark.sparkContext
conf = sc.getConf()
print("master", sc.master, "conf", *(conf.get(k) for k in (
    "spark.dynamicAllocation.enabled", "spark.dynamicAllocation.shuffleTracking.enabled",
    "spark.dynamicAllocation.maxExecutors", "spark.executor.cores", "spark.executor.memory",
    "spark.driver.memory", "spark.jc.probe")), flush=True)

def slow(part):
    time.sleep(6)
    return [shapes.square(x) for x in part]

total = sum(sc.parallelize(range(100), 4).mapPartitions(slow).collect())
pythons = sorted(set(sc.parallelize(range(4), 4).map(lambda _: sys.executable).collect()))
print("total", total, "driver", sys.executable, "executors", pythons, flush=True)
get_run().log("total", total)
deadline = time.time() + 240
while not os.path.exists(release) and time.time() < deadline:  # idle: executors go
    time.sleep(0.2)
print("released", flush=True)
"""


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


@pytest.mark.timeout(900)
def test_an_unchanged_script_runs_and_executors_scale_up_and_back(
        spark_project: SparkProject, tmp_path: Path) -> None:
    """One run: the script computes with a package of its snapshot, in the run's
    interpreter on driver and executors; executors rise with the job and fall back
    while the run idles; result in the log, metric in `metrics`, the application in
    `show --json`, executors in `targets --json`, Spark's INFO lines out of the widget."""
    from jupyter_compute import Run
    from jupyter_compute.protocol import RunStatus
    from jupyter_compute.widgets.cluster import ClusterWidget
    from jupyter_compute.widgets.run import RunWidget

    p = spark_project
    p.write("shapes/__init__.py", "def square(x):\n    return x * x\n")
    p.write("job.py", JOB)
    # The run's own interpreter (what an environment resolves to): a venv on top of ours.
    venv = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip",
                    str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    release = tmp_path / "release"
    run = Run.get(p.submit("job.py", "--target", CLUSTER, "--python", python, "--",
                           str(release)), p.root)

    rose = p.wait_executors(lambda n: n["current"] >= 1, timeout=300)
    assert rose["max"] == 2
    listed = {t["name"]: t for t in json.loads(p.cli("targets", "--json").stdout)}
    assert listed[CLUSTER]["nodes"]["current"] >= 1, listed
    assert ClusterWidget(p.target(), follow=False).last["current"] >= 1
    _wait(lambda: "total " in run.log(), 300, "the job's result")
    p.wait_executors(lambda n: n["current"] == 0, timeout=120)  # idle 5 s: back to 0
    assert run.status() is RunStatus.RUNNING  # the run still holds its application
    release.touch()
    assert run.wait(timeout=300) is RunStatus.COMPLETED, (run.record.error, run.log()[-3000:])

    log = run.log()
    # The target's options reach the script's own session through spark-submit.
    assert "master spark://127.0.0.1:" in log
    assert "conf true true 2 1 512m 600m from-attach" in log, log[-3000:]
    assert f"total 328350 driver {python} executors ['{python}']" in log, log[-3000:]
    assert " INFO " in log  # Spark's own lines stay in the full log
    out = p.cli("metrics", run.id, "--json")
    assert json.loads(out.stdout)["total"][0]["value"] == 328350
    job = p.show(run.id)["target_job"]
    assert job["id"].startswith("app-") and job["state"] == "FINISHED", job
    assert job["ui_url"].startswith("http://127.0.0.1:") and job["id"] in job["ui_url"]

    widget = RunWidget(Run.get(run.id, p.root), interval=0.1)
    widget.follower.join(60)
    assert "total 328350" in widget.log_text and "released" in widget.log_text
    assert " INFO " not in widget.log_text
    assert widget.log_view.hidden > 0  # counted as not shown; "show all" has them


CANCELED = """
import time
from pyspark.sql import SparkSession
sc = SparkSession.builder.getOrCreate().sparkContext
print("working", flush=True)
sc.parallelize(range(2), 2).map(lambda x: time.sleep(600) or x).collect()
"""

FAILS = """
from pyspark.sql import SparkSession
spark = SparkSession.builder.getOrCreate()
print("about to fail", flush=True)
raise ValueError("bad input: 42")
"""

SLEEPS = """
import time
print("sleeping", flush=True)
time.sleep(600)
"""


def _listening() -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket (``ss``, from iproute2)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = []
    for line in out.splitlines():
        fields = line.split()
        for pid in re.findall(r"pid=(\d+)", line):
            found.append((int(pid), fields[3]))
    return found


def _run_processes(run_id: str) -> list[int]:
    """Live processes that carry the run's id in their environment (driver, spark-submit)."""
    from jupyter_compute import protocol

    marker = f"{protocol.ENV_RUN_ID}={run_id}".encode()
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if marker in f.read().split(b"\0") and pid_alive(int(name)):
                        found.append(int(name))
            except OSError:
                continue
    return found


@pytest.mark.timeout(900)
def test_cancel_failure_and_timeout_end_the_application(spark_project: SparkProject) -> None:
    """Three runs at once: one canceled mid-job (no application on the master, no driver
    process 5 s later), one whose script raises (Failed, the exception's line as its
    error), one past max_run_duration_seconds (TimedOut)."""
    from jupyter_compute import Run
    from jupyter_compute.protocol import RunStatus
    from jupyter_compute.targets.spark.cluster import executor_counts, master_json
    from jupyter_compute.widgets.run import RunWidget

    p = spark_project
    p.write("canceled.py", CANCELED)
    p.write("fails.py", FAILS)
    p.write("sleeps.py", SLEEPS)
    canceled = Run.get(p.submit("canceled.py", "--target", CLUSTER), p.root)
    fails = Run.get(p.submit("fails.py", "--target", CLUSTER), p.root)
    sleeps = Run.get(p.submit("sleeps.py", "--target", CLUSTER, "--max-duration", "40s"),
                     p.root)
    web_ui = p.target().launcher.locations()[1]

    def app_with_executors():
        job = p.target().job(canceled.id)
        return job if job and executor_counts(web_ui).get(job["id"]) else None

    job = _wait(app_with_executors, 400, "the canceled run's application and executors")
    assert job["state"] == "RUNNING"
    assert _run_processes(canceled.id)
    # Every port of the cluster and of the driver listens on loopback only.
    cluster = p.target().launcher.cluster()
    ours = set(cluster.processes()) | set(_run_processes(canceled.id))
    listening = _listening()
    assert {pid for pid, _ in listening} & ours, listening
    assert all(addr.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:"))
               for pid, addr in listening if pid in ours), listening
    # While it runs, its UI is the driver's, and the RunWidget links it.
    with urllib.request.urlopen(job["ui_url"], timeout=30) as page:
        assert page.status == 200
    widget = RunWidget(Run.get(canceled.id, p.root), interval=0.1)
    try:
        _wait(lambda: job["id"] in widget.nodes.value, 60, "the widget's application link")
        assert f'href="{job["ui_url"]}"' in widget.nodes.value
        assert re.search(r"<b>[1-9]\d*</b> nodes?", widget.nodes.value), widget.nodes.value
    finally:
        widget.follower.stop()
    canceled.cancel()
    asked = time.monotonic()

    def gone():
        active = {a["id"] for a in master_json(web_ui).get("activeapps") or []}
        return job["id"] not in active and not _run_processes(canceled.id) and \
            not executor_counts(web_ui).get(job["id"])

    _wait(gone, 5, "the application, its executors and its driver to be gone")
    assert time.monotonic() - asked <= 5.5
    assert canceled.wait(timeout=60) is RunStatus.CANCELED

    assert fails.wait(timeout=400) is RunStatus.FAILED, fails.log()[-3000:]
    assert fails.record.error == "ValueError: bad input: 42", fails.record.error
    assert p.show(fails.id)["error"] == "ValueError: bad input: 42"

    assert sleeps.wait(timeout=400) is RunStatus.TIMED_OUT, sleeps.log()[-3000:]
    assert "sleeping" in sleeps.log()
    _wait(lambda: not _run_processes(sleeps.id), 10, "the timed-out run's processes to end")


def test_bad_input_is_one_line(spark_project: SparkProject, tmp_path: Path) -> None:
    """Java missing, a master that does not answer, an executor bigger than any worker,
    a malformed --conf: each refused at attach with one line; --conf repeats; `stop`
    would end the cluster's own JVMs only."""
    from jupyter_compute.targets.ray.cluster import free_ports

    p = spark_project
    master, web_ui = p.target().launcher.locations()

    def refused(*args: str, env: dict[str, str] | None = None) -> str:
        out = p.cli("attach", *args, env=env)
        assert out.returncode != 0, out.stdout
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        return lines[0]

    line = refused("nojava", "--type", "spark", env={"JAVA_HOME": str(tmp_path / "nojdk")})
    assert "Java is missing" in line and "openjdk-17-jre-headless" in line
    port = free_ports(1)[0]
    line = refused("gone", "--type", "spark", "--master", f"spark://127.0.0.1:{port}",
                   "--master-ui", f"http://127.0.0.1:{port}")
    assert "does not answer" in line
    line = refused("big", "--type", "spark", "--master", master, "--master-ui", web_ui,
                   "--executor-memory", "64g")
    assert "--executor-memory 64g is more than any worker" in line
    line = refused("badconf", "--type", "spark", "--conf", "nonsense")
    assert "--conf takes KEY=VALUE" in line

    # What `stop` would end is this cluster's JVMs and theirs, never a look-alike.
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)",
                              "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                              master])
    try:
        owned = p.target().launcher.cluster().processes()
        assert len(owned) >= 2 and decoy.pid not in owned, owned
    finally:
        decoy.kill()
        decoy.wait()

    out = p.cli("attach", "shared", "--type", "spark", "--master", master, "--master-ui",
                web_ui, "--conf", "spark.a=1", "--conf", "spark.b=x=y")
    assert out.returncode == 0, out.stderr
    listed = {t["name"]: t for t in json.loads(p.cli("targets", "--json").stdout)}
    assert listed["shared"]["conf"] == ["spark.a=1", "spark.b=x=y"]
    assert p.cli("detach", "shared").returncode == 0


HEAD_JOB = """
import getpass
from pyspark.sql import SparkSession
from jupyter_compute.tracking import get_run
import shapes

sc = SparkSession.builder.getOrCreate().sparkContext
total = sc.parallelize(range(10), 2).map(shapes.square).sum()
print("user", getpass.getuser(), "total", total, flush=True)
get_run().log("total", total)
"""


@pytest.mark.timeout(600)
def test_host_runs_spark_submit_on_an_ssh_head_node(spark_project: SparkProject,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """HDInsight-style: --host makes the head node (a real sshd, another user) run
    spark-submit against the cluster's master; the snapshot gets there over SSH."""
    import shutil
    import tempfile

    from jupyter_compute import Run, api
    from jupyter_compute.protocol import RunStatus

    import sshd

    reason = sshd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    p = spark_project
    master, web_ui = p.target().launcher.locations()
    home = Path(p.target().launcher.cluster().load().spark_home)
    # Not pytest's tmp dirs (0700 root): sshd reads the authorized keys as the user.
    keys = Path(tempfile.mkdtemp(prefix="jc-spark-sshd-"))
    keys.chmod(0o755)
    monkeypatch.setenv("HOME", str(keys))  # no known_hosts or agent of ours decides
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    sshd.ensure_user(sshd.USER)
    workdir = f"jc-spark-{os.getpid()}"
    try:
        with sshd.SSHServer(keys / "head", "127.0.0.7") as server:
            key = sshd.make_key(keys / "id_head")
            server.authorize(sshd.USER, key)
            server.start()
            login = sshd.Login(server, key, f"~/{workdir}")
            api.attach("head", "spark", workspace=p.root, master=master, master_ui=web_ui,
                       spark_home=str(home), **login.options())
            p.write("shapes/__init__.py", "def square(x):\n    return x * x\n")
            p.write("head_job.py", HEAD_JOB)
            run = Run.get(p.submit("head_job.py", "--target", "head"), p.root)
            assert run.wait(timeout=400) is RunStatus.COMPLETED, \
                (run.record.error, run.log()[-3000:])
            assert f"user {sshd.USER} total 285" in run.log()
            assert run.metrics()["total"][-1]["value"] == 285
            assert p.show(run.id)["target_job"]["id"].startswith("app-")
    finally:
        api.detach("head", workspace=p.root)
        shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir,
                      ignore_errors=True)
        shutil.rmtree(keys, ignore_errors=True)
