"""The ray target on real Ray clusters: one embedded autoscaling cluster for the whole
session (``tests/raycluster.py``), a head started separately for ``--address``, and
one ephemeral cluster. Nothing is mocked but "Ray is not installed", which cannot be
true here.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

# The session's clusters (ray_session, ray_project, separate_head) are raycluster.py's,
# declared once in conftest.py so every module shares them.
from raycluster import CLUSTER, RayProject, SeparateHead

from jupyter_compute import api
from jupyter_compute.exceptions import TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runs import Run
from jupyter_compute.targets.ray import joblog as _ray_joblog
from jupyter_compute.targets.ray import node_counts
from jupyter_compute.targets.ray.cluster import (
    ClusterShape,
    EmbeddedCluster,
    autoscaler_config,
)
from jupyter_compute.targets.ray.jobs import JobsClient, normalize_address
from jupyter_compute.units import parse_size_option

from conftest import pid_alive

COUNTER = """\
import os, sys, time
from jupyter_compute.tracking import get_run
run = get_run()
n, pause = int(sys.argv[1]), float(sys.argv[2])
for i in range(n):
    print(f"line {i}", flush=True)
    run.log("loss", 1.0 / (i + 1), step=i)
    time.sleep(pause)
with open("outputs/result.txt", "w") as f:
    f.write("done")
print("RAY_ADDRESS", os.environ.get("RAY_ADDRESS"), flush=True)
"""

WINDOW = """\
import json, sys, time
start = time.time()
print("start", flush=True)
time.sleep(float(sys.argv[1]))
with open("outputs/window.json", "w") as f:
    json.dump([start, time.time()], f)
"""

STUBBORN = """\
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "600"])
escaped = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
    start_new_session=True)
print("pids", os.getpid(), child.pid, escaped.pid, flush=True)
time.sleep(600)
"""

FANOUT = """\
import ray
ray.init()  # RAY_ADDRESS from the job: this run's own cluster
@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()
found = sorted(set(ray.get([where.remote() for _ in range(2)])))
print("nodes", len(ray.nodes()), "tasks on", found[:1], flush=True)
"""


def _wait_line(run: Run, text: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    for line in run.follow():
        if text in line:
            return line
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no line with {text!r} in: {run.log()[-2000:]}")


# -- no cluster needed -----------------------------------------------------------------


def test_autoscaler_config_is_built_in_code() -> None:
    shape = ClusterShape(min_nodes=1, max_nodes=4, node_cpus=2, node_memory=4 * 2**30,
                         idle_seconds=30, node_type="small")
    cfg = autoscaler_config(shape, "10.0.0.1:7000")
    worker = cfg["available_node_types"]["small"]
    assert (worker["min_workers"], worker["max_workers"], worker["resources"]["CPU"]) == (1, 4, 2)
    assert "memory" not in worker["resources"]  # Ray's fake provider refuses it
    assert worker["resources"]["object_store_memory"] == int(4 * 2**30 * 0.3)
    assert cfg["idle_timeout_minutes"] == 0.5 and cfg["max_workers"] == 4
    assert cfg["provider"] == {"type": "fake_multinode", "use_node_id_as_ip": True,
                               "disable_node_updaters": True,
                               "disable_launch_config_check": True,
                               "gcs_address": "10.0.0.1:7000"}


def test_sizes_addresses_and_node_counts() -> None:
    size = parse_size_option  # the one size grammar (units.py), as the ray options use it
    assert size("512m", "--node-memory") == 512 * 2**20 and size("4GiB", "-") == 4 * 2**30
    assert size(None, "--node-memory") is None
    with pytest.raises(UsageError, match="like 512m or 4g"):
        size("lots", "--node-memory")
    assert normalize_address("10.0.0.5") == "http://10.0.0.5:8265"
    assert normalize_address("https://head:443/") == "https://head:443"
    with pytest.raises(TargetError, match="Ray Client address"):
        normalize_address("ray://head:10001")
    status = {"autoscalerReport": {"activeNodes": {"ray.head.default": 1, "cpu": 2},
                                   "pendingLaunches": {"cpu": 1}, "pendingNodes": []},
              "loadMetricsReport": {"usageByNode": {
                  "h": {"node:InternalHead": [0, 1]},
                  "a": {"CPU": [1.0, 1.0]}, "b": {"CPU": [0.0, 1.0]}}}}
    assert node_counts(status) == {"current": 2, "pending": 1, "idle": 1}
    assert node_counts({}, [{"is_head_node": True}, {"is_head_node": False}])["current"] == 1


def test_job_log_mirror_rebuilds_the_run_folder(tmp_path: Path) -> None:
    """What the node prints (log lines, control lines, outputs) becomes a run folder."""
    import base64
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"hello"
        info = tarfile.TarInfo("sub/a.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        evil = tarfile.TarInfo("../escape.txt")
        evil.size = 1
        tar.addfile(evil, io.BytesIO(b"x"))

    def ctl(kind: str, payload: object) -> str:
        return f"{_ray_joblog.MARK}{kind} {json.dumps(payload)}\n"

    log = ("Running entrypoint for job x: python _jc_entry.py\n" + ctl("start", {}) +
           "line 1\n\x1e\x1ejc1 not a control line\n" +
           ctl("metric", {"name": "loss", "value": 0.5, "step": 0}) + "line 2 is half")
    mirror = _ray_joblog.Mirror(str(tmp_path))
    mirror.feed(log, final=False)
    assert (tmp_path / "output.log").read_text() == "line 1\n\x1ejc1 not a control line\n"
    log += (" done\n" + ctl("outputs", {"data": base64.b64encode(buf.getvalue()).decode()}) +
            ctl("outputs-end", {"bytes": 1, "files": 1}) +
            ctl("status", {"status": "Completed", "exit_code": 0}) + ctl("end", {}))
    again = _ray_joblog.Mirror(str(tmp_path))  # another process continues where it stopped
    again.feed(log, final=True)
    assert (tmp_path / "output.log").read_text().endswith("line 2 is half done\n")
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["value"] == 0.5
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "Completed"
    assert (tmp_path / "outputs" / "sub" / "a.txt").read_text() == "hello"
    assert not (tmp_path / "escape.txt").exists()
    assert "Running entrypoint" in (tmp_path / "ray-job.log").read_text()
    assert again.ended


def test_options_are_checked_at_attach(project, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match="min_nodes <= max_nodes"):
        api.attach("c", "ray", min_nodes=3, max_nodes=2)
    with pytest.raises(UsageError, match="ephemeral applies to the embedded cluster"):
        api.attach("c", "ray", address="http://127.0.0.1:1", ephemeral=True)
    with pytest.raises(UsageError, match="transport must be one of"):
        api.attach("c", "ray", transport="carrier-pigeon")
    # Mocked: Ray *is* installed here, so its absence can only be pretended.
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(TargetError, match=r"pip install 'jupyter_compute\[ray\]'"):
        api.attach("c", "ray")


def test_wrong_and_unreachable_addresses_say_what_to_do(project) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(TargetError, match=r"cannot reach the Ray head at http://127.0.0.1:\d+ "
                                          r"\(.*refused.*\); check that it runs"):
        api.attach("gone", "ray", address=f"127.0.0.1:{free}")

    class NotRay(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), NotRay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(TargetError, match=r"is not a Ray dashboard .*http://HEAD:8265"):
            api.attach("web", "ray", address=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert "gone" not in api.targets() and "web" not in api.targets()


# -- the session's embedded cluster ------------------------------------------------------


def test_scales_from_zero_for_a_run_and_back_to_zero(ray_project: RayProject, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    """%%submit's path through the API: 0 nodes → a node comes up → logs → 0 nodes,
    seen alike by the ClusterWidget and by the JupyterLab sidebar's server API."""
    import urllib.request

    from jupyter_compute.widgets.cluster import ClusterWidget

    from labserver import JupyterLab

    p = ray_project
    lab = JupyterLab(p.root, tmp_path / "lab").start()
    request.addfinalizer(lab.stop)
    panel_counts: list[int] = []

    def panel_nodes() -> None:  # what the Compute sidebar polls
        url = f"{lab.base}/jupyter-compute/api/targets?token={lab.token}"
        with urllib.request.urlopen(url, timeout=30) as reply:
            rows = json.loads(reply.read())["targets"]
        panel_counts.append(next(r for r in rows if r["name"] == CLUSTER)["nodes"]["current"])

    p.wait_nodes(lambda n: n["current"] == 0 and n["pending"] == 0, timeout=120)
    p.write("counter.py", COUNTER)
    widget = ClusterWidget(p.target(), interval=0.2)
    run = api.submit("counter.py", target=CLUSTER, arguments=["4", "0.4"])
    details, nodes_seen = set(), []
    while not run.status().is_terminal():
        st = run.target.status(run.id)
        if st.get("detail"):
            details.add(st["status"] + ": " + st["detail"].split(" (")[0])
        nodes_seen.append(run.target.nodes())
        panel_nodes()
        time.sleep(0.2)
    assert run.status() is RunStatus.COMPLETED, run.record.error
    assert "Preparing: waiting for 1 node" in details
    assert max(n["current"] for n in nodes_seen) >= 1
    log = run.log()
    assert [f"line {i}" for i in range(4)] == [ln for ln in log.splitlines()
                                               if ln.startswith("line ")]
    assert f"RAY_ADDRESS {p.target().cluster().load().node_ip}" in log  # the job's own cluster
    assert [r["value"] for r in run.metrics()["loss"]] == [1.0, 0.5, 1 / 3, 0.25]
    assert [f.name for f in run.outputs()] == ["result.txt"]
    assert json.loads((p.run_dir(run.id) / "ray.json").read_text())["transport"] == "shared"

    p.wait_nodes(lambda n: n["current"] == 0, timeout=120)  # idle_seconds later: back to 0
    time.sleep(1.5)  # the widget's next poll (its target caches nodes for 1 s)
    panel_nodes()
    counts = [c for _, c, *_ in widget.points]
    widget.stop()
    assert counts[0] == 0 and max(counts) >= 1 and counts[-1] == 0, counts
    assert max(panel_counts) >= 1 and panel_counts[-1] == 0, panel_counts
    bundle = widget._repr_mimebundle_()
    assert bundle["text/plain"].startswith(  # the static summary, and when it was true
        "cpu-cluster · nodes 0 (pending 0, idle 0) · min 0 · max 2 · as of ")
    assert "<svg" in bundle["text/html"]  # the nodes over time


def test_two_runs_in_parallel_on_two_nodes(ray_project: RayProject) -> None:
    """Two runs get a node each, while four threads poll them through one target object
    (a kernel's widgets share it: status, log and node counts at once)."""
    p = ray_project
    p.write("window.py", WINDOW)
    target = p.target()
    runs = [Run.submit(target, api.resolve_spec("window.py", target=CLUSTER, name=f"par{i}",
                                                arguments=["12"])) for i in range(2)]
    seen: list[list[str]] = []  # the statuses each thread saw, in its order
    errors: list[BaseException] = []
    most = [0]

    def poll(run: Run) -> None:
        mine: list[str] = []
        seen.append(mine)
        try:
            while True:
                st = target.status(run.id)
                target.tail(run.id)
                most[0] = max(most[0], target.nodes()["current"])
                mine.append(st["status"])
                if RunStatus(st["status"]).is_terminal():
                    return
                time.sleep(0.1)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=poll, args=(run,)) for run in runs * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert [r.status() for r in runs] == [RunStatus.COMPLETED] * 2, [r.record.error
                                                                     for r in runs]
    order = [s.value for s in (RunStatus.QUEUED, RunStatus.PREPARING, RunStatus.RUNNING,
                               RunStatus.COMPLETED)]
    for statuses in seen:  # every thread saw its run move forward only, to the end
        steps = [order.index(st) for st in statuses]
        assert steps == sorted(steps) and steps[-1] == 3, statuses
    (a0, a1), (b0, b1) = (json.loads((r.outputs()[0]).read_text()) for r in runs)
    assert max(a0, b0) < min(a1, b1), "the two runs did not overlap"
    assert most[0] == 2  # max_nodes: one node per run, never more


def test_a_run_fans_out_with_ray_init(ray_project: RayProject) -> None:
    p = ray_project
    p.write("fanout.py", FANOUT)
    run = api.submit("fanout.py", target=CLUSTER)
    assert run.wait(timeout=300) is RunStatus.COMPLETED, (run.record.error, run.log()[-2000:])
    assert "tasks on ['fff" in run.log()  # the fake provider's node ids: this cluster's nodes


def test_cancel_ends_the_whole_process_tree(ray_project: RayProject) -> None:
    p = ray_project
    p.write("stubborn.py", STUBBORN)
    run_id = p.submit("stubborn.py", "--target", CLUSTER)
    run = Run.get(run_id)
    pids = [int(x) for x in _wait_line(run, "pids").split()[1:]]
    agent = run.target.status(run_id)["agent"]["pid"]
    began = time.monotonic()
    out = p.cli("cancel", run_id)
    assert out.returncode == 0 and "Canceled" in out.stdout, out.stderr
    while time.monotonic() - began < 5 and any(pid_alive(x) for x in [*pids, agent]):
        time.sleep(0.1)
    assert not [x for x in [*pids, agent] if pid_alive(x)], "processes outlived the cancel"
    assert Run.get(run_id).status() is RunStatus.CANCELED
    jobs = p.target().cluster().client()
    deadline = time.monotonic() + 30  # Ray's own bookkeeping lags (it waits on zombies)
    while jobs.info(run_id)["status"] not in ("STOPPED", "FAILED") and \
            time.monotonic() < deadline:
        time.sleep(0.5)
    assert jobs.info(run_id)["status"] in ("STOPPED", "FAILED")


def test_cli_submit_wait_and_start_on_a_running_cluster(ray_project: RayProject) -> None:
    p = ray_project
    p.write("counter.py", COUNTER)
    address = p.target().cluster().load().address
    out = p.cli("submit", "counter.py", "--target", CLUSTER, "--wait", "--", "2", "0.1")
    assert out.returncode == 0, out.stderr
    assert "line 0\nline 1\n" in out.stdout and "Completed" in out.stdout
    out = p.cli("start", CLUSTER)  # already running: reattaches, starts nothing
    assert out.returncode == 0 and "started cpu-cluster: nodes" in out.stdout, out.stderr
    assert p.target().cluster().load().address == address


def test_reattach_from_another_process_by_the_recorded_address(ray_project: RayProject
                                                               ) -> None:
    p = ray_project
    p.write("counter.py", COUNTER)
    state = p.target().cluster().load()
    run = api.submit("counter.py", target=CLUSTER, arguments=["3", "0.5"])
    code = ("from jupyter_compute import api, Run\n"
            f"t = api.get_target({CLUSTER!r})\n"
            "print(t.cluster().load().address, t.nodes()['max'])\n"
            f"r = Run.get({run.id!r}); print(r.wait(timeout=240).value)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=p.root, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [state.address, "2", "Completed"]
    assert p.target().cluster().load().address == state.address  # no second cluster


def test_kernel_submit_survives_a_kernel_restart(ray_project: RayProject) -> None:
    """``%%submit --target cpu-cluster`` in a real kernel; a new kernel reattaches."""
    from kernel import Kernel

    p = ray_project
    k = Kernel(p.root)
    try:
        assert k.run("%load_ext jupyter_compute").status == "ok"
        cell = ("%%submit --target cpu-cluster -o run\nimport time\nfor i in range(8):\n"
                "    print('tick', i, flush=True)\n    time.sleep(1)\n")
        out = k.run(cell)
        assert out.status == "ok", out.error_text
        run_id = k.value("run.id")
        out = k.run("from jupyter_compute import api\n"
                    "from jupyter_compute.widgets.cluster import cluster_display\n"
                    "w = cluster_display(api.get_target('cpu-cluster'))\nw")
        assert out.status == "ok", out.error_text
        shown = out.data[-1]
        assert "application/vnd.jupyter.widget-view+json" in shown  # the live widget
        assert shown["text/plain"].startswith("cpu-cluster · ")  # and its static fallback
        deadline = time.monotonic() + 30
        while k.value("w.last and w.last['max']") != "2" and time.monotonic() < deadline:
            time.sleep(0.5)  # the widget's thread asks the cluster; the kernel never waits
        assert k.value("w.last['max']") == "2" and k.value("w.following") == "True"
    finally:
        k.shutdown()  # the kernel goes away (a restart); the run and the cluster must not
    assert p.target().cluster().running()
    k2 = Kernel(p.root)
    try:
        assert k2.run("%load_ext jupyter_compute").status == "ok"
        out = k2.run(f"%run_show {run_id} -o again")
        assert out.status == "ok", out.error_text
        assert k2.value("again.wait(timeout=240).value", timeout=300) == "Completed"
        assert "tick 7" in k2.value("again.log()")
    finally:
        k2.shutdown()


def test_secret_environment_variables_stay_out_of_the_ray_job(ray_project: RayProject
                                                              ) -> None:
    """Defect 8, Ray side: Ray shows a job's runtime env and metadata to anyone who can
    see its dashboard. A shared-transport run gets its variables from the run folder,
    never through the job; a job-log run (whose only channel is the job) with
    secret-looking variables is refused before anything is written."""
    p = ray_project
    p.write("env.py", "import os\nprint('token ok', os.environ['API_TOKEN'] == 's3cr3t-v4lue')\n")
    env = {"API_TOKEN": "s3cr3t-v4lue", "EPOCHS": "3"}
    run = api.submit("env.py", target=CLUSTER, environment_variables=env)
    assert run.wait(timeout=240) is RunStatus.COMPLETED, run.record.error
    assert "token ok True" in run.log()
    info = p.target().cluster().client().info(run.id)
    assert "s3cr3t-v4lue" not in json.dumps(info)

    cluster = p.target().cluster()
    os.environ["CLUSTER_TOKEN_FOR_SECRETS"] = cluster.token() or ""
    try:
        api.attach("remote-log", "ray", address=cluster.load().address, transport="job-log",
                   token_env="CLUSTER_TOKEN_FOR_SECRETS", replace=True)
        before = {r.id for r in api.runs()}
        with pytest.raises(UsageError, match=r"API_TOKEN look secret; set them on the "
                                             r"cluster's nodes"):
            api.submit("env.py", target="remote-log", environment_variables=env)
        assert {r.id for r in api.runs()} == before  # refused before a run was recorded
    finally:
        del os.environ["CLUSTER_TOKEN_FOR_SECRETS"]


def test_job_log_transport_and_infeasible_request_on_an_address(
        ray_project: RayProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """The remote path, on this cluster: the run travels as working_dir, comes back in
    the job's log; and a request no node type can hold fails once Ray says so."""
    p = ray_project
    p.write("counter.py", COUNTER)
    cluster = p.target().cluster()
    address = cluster.load().address
    with pytest.raises(TargetError, match="token authentication; set the target's token_env"):
        JobsClient(address).submit("true", submission_id="no-token")
    monkeypatch.setenv("CLUSTER_TOKEN", cluster.token() or "")
    api.attach("remote", "ray", address=address, transport="job-log", token_env="CLUSTER_TOKEN",
               replace=True)
    run = api.submit("counter.py", target="remote", arguments=["3", "0.2"])
    assert run.wait(timeout=240) is RunStatus.COMPLETED, run.record.error
    assert [ln for ln in run.log().splitlines() if ln.startswith("line ")] == \
        ["line 0", "line 1", "line 2"]
    assert len(run.metrics()["loss"]) == 3
    assert [f.read_text() for f in run.outputs()] == ["done"]
    assert "Running entrypoint" in (p.run_dir(run.id) / "ray-job.log").read_text()
    uploads: list[str] = []
    real_upload = JobsClient.upload_package

    def counting(self: JobsClient, uri: str, data: bytes) -> None:
        uploads.append(uri)
        real_upload(self, uri, data)

    JobsClient.upload_package = counting  # type: ignore[method-assign]
    try:  # the same snapshot again (other arguments): its package is in the cluster already
        run2 = api.submit("counter.py", target="remote", arguments=["1", "0"])
    finally:
        JobsClient.upload_package = real_upload  # type: ignore[method-assign]
    assert run2.wait(timeout=240) is RunStatus.COMPLETED
    assert uploads == []
    jobs = cluster.client()
    assert jobs.info(run.id)["runtime_env"]["working_dir"] == \
        jobs.info(run2.id)["runtime_env"]["working_dir"]

    api.attach("too-big", "ray", address=address, run_cpus=64, token_env="CLUSTER_TOKEN",
               replace=True)
    began = time.monotonic()
    run = api.submit("counter.py", target="too-big", arguments=["1", "0"])
    assert run.wait(timeout=90) is RunStatus.FAILED
    assert time.monotonic() - began < 60
    assert "Ray cannot place this run" in run.record.error and "64 CPUs" in run.record.error


# -- a head started separately, and stopping only what is ours ---------------------------


def test_an_existing_head_by_address(ray_project: RayProject,
                                     separate_head: SeparateHead) -> None:
    p = ray_project
    p.write("counter.py", COUNTER)
    api.attach("ext", "ray", address=separate_head.address, replace=True)
    run = api.submit("counter.py", target="ext", arguments=["2", "0.1"])
    assert run.wait(timeout=240) is RunStatus.COMPLETED, run.record.error
    assert "line 1" in run.log()
    assert json.loads((p.run_dir(run.id) / "ray.json").read_text())["transport"] == "shared"
    assert api.get_target("ext").nodes()["current"] == 0  # a head only, no workers
    with pytest.raises(UsageError, match="jupyter_compute does not stop it"):
        api.get_target("ext").stop()

    api.attach("ext-big", "ray", address=separate_head.address, node_cpus=64, replace=True)
    run = api.submit("counter.py", target="ext-big", arguments=["1", "0"])
    assert run.wait(timeout=60) is RunStatus.FAILED
    assert "Ray cannot place this run" in run.record.error and "64 CPUs" in run.record.error


def test_ephemeral_cluster_is_created_for_a_run_and_removed(ray_project: RayProject) -> None:
    p = ray_project
    p.write("counter.py", COUNTER)
    session = p.target().cluster().load()
    api.attach("eph", "ray", ephemeral=True, max_nodes=1, idle_seconds=5, replace=True)
    run = api.submit("counter.py", target="eph", arguments=["2", "0.2"])
    name = json.loads((p.run_dir(run.id) / "ray.json").read_text())["cluster"]
    cluster = EmbeddedCluster(p.root / ".jupyter_compute", name)
    state = cluster.load()
    assert state is not None and state.ephemeral and state.address != session.address
    pids = cluster.processes()
    assert pids
    assert run.wait(timeout=240) is RunStatus.COMPLETED, run.record.error
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (cluster.state_path.exists() or
                                           any(pid_alive(x) for x in pids)):
        time.sleep(0.5)
    assert not cluster.state_path.exists() and not [x for x in pids if pid_alive(x)]
    assert not os.path.exists(state.temp_dir)
    assert "line 1" in run.log()  # the run's folder stays in the workspace
    assert p.target().cluster().running()  # the session's cluster was not touched


def test_stop_and_start_touch_only_their_own_processes(ray_project: RayProject,
                                                       separate_head: SeparateHead) -> None:
    p = ray_project
    ours, theirs = p.target().cluster().processes(), separate_head.processes()
    assert ours and theirs and not set(ours) & set(theirs)
    out = p.cli("stop", CLUSTER)
    assert out.returncode == 0, out.stderr
    assert not [x for x in ours if pid_alive(x)]
    assert all(pid_alive(x) for x in theirs), "our stop ended another cluster's processes"
    assert JobsClient(separate_head.address).version()["ray_version"]
    assert p.target().nodes()["running"] is False
    out = p.cli("start", CLUSTER)
    assert out.returncode == 0 and "started cpu-cluster: nodes 0 (min 0, max 2)" in out.stdout, \
        out.stderr
    assert p.target().cluster().running() and all(pid_alive(x) for x in theirs)


def test_submit_to_a_stopped_cluster_says_starting_at_once(ray_project: RayProject) -> None:
    """A cold head takes seconds: ``%%submit`` says "Starting cluster NAME…" before
    anything else, and takes the note away once the run's own view shows."""
    from kernel import Kernel

    p = ray_project
    p.target().stop()
    assert p.target().nodes()["running"] is False
    k = Kernel(p.root)
    try:
        assert k.run("%load_ext jupyter_compute").status == "ok"
        out = k.run("%%submit --target cpu-cluster --wait -o run\nprint('warm', flush=True)\n",
                    timeout=300)
        assert out.status == "ok", out.error_text
        first = out.data[0]["text/plain"]
        assert first.startswith("Starting cluster cpu-cluster…"), out.data[:3]
        assert {"text/plain": ""} in out.data[1:]  # cleared: the run's view says the rest
        assert k.value("run.status().value") == "Completed"
    finally:
        k.shutdown()
    assert p.target().cluster().running()


def test_stop_spares_strangers_that_name_the_gcs_port(ray_project: RayProject) -> None:
    """Defect 10: `stop` ended any process whose command line ended in ``:<gcs_port>``
    (or whose RAY_ADDRESS did). Only what is provably the cluster's may go."""
    p = ray_project
    state = p.target().cluster().load()
    assert state is not None
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    strangers = [
        subprocess.Popen([*sleeper, f"127.0.0.1:{state.gcs_port}"], start_new_session=True),
        subprocess.Popen(sleeper, start_new_session=True,
                         env={**os.environ, "RAY_ADDRESS": state.gcs_address}),
    ]
    try:
        ours = p.target().cluster().processes()
        assert ours and not {s.pid for s in strangers} & set(ours)
        p.target().stop()
        assert not [x for x in ours if pid_alive(x)]
        assert [s.poll() for s in strangers] == [None, None], \
            "stop ended processes that are not the cluster's"
    finally:
        for stranger in strangers:
            stranger.kill()
            stranger.wait()
        p.target().start()


def test_a_head_that_cannot_start_points_at_its_log(ray_project: RayProject,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `ray start` failure: the GCS port it is given is taken."""
    from jupyter_compute.targets.ray import cluster as _ray_cluster

    taken = socket.socket()
    taken.bind(("", 0))
    taken.listen()
    free = _ray_cluster.free_ports
    monkeypatch.setattr(_ray_cluster, "free_ports",
                        lambda n: [taken.getsockname()[1], *free(n - 1)])
    api.attach("broken", "ray", replace=True)
    try:
        with pytest.raises(TargetError, match=r"the Ray head of 'broken' failed to start "
                                              r"\(ray start exited 1: .*\); see .*broken\.log"):
            api.get_target("broken").start()
        assert not api.get_target("broken").cluster().processes()
    finally:
        taken.close()
        api.get_target("broken").cluster().stop(remove_files=True)


def test_a_head_whose_raylet_misses_rays_startup_wait_is_started_again(
        ray_project: RayProject) -> None:
    """A loaded machine: the raylet does not register within `ray start`'s fixed 30 s
    (here it is frozen with SIGSTOP the moment it appears, as a starved process is).
    The start ends what the failed attempt left and starts once more, on fresh ports."""
    import signal

    api.attach("slowhead", "ray", replace=True)
    cluster = api.get_target("slowhead").cluster()
    temp = cluster.temp_dir.encode()
    frozen: list[int] = []
    done = threading.Event()

    def freeze_the_first_raylet() -> None:
        while not done.is_set():
            for name in os.listdir("/proc"):
                try:
                    with open(f"/proc/{name}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv[0].endswith(b"/raylet") and any(temp in a for a in argv):
                    os.kill(int(name), signal.SIGSTOP)
                    frozen.append(int(name))
                    return
            time.sleep(0.005)

    watcher = threading.Thread(target=freeze_the_first_raylet, daemon=True)
    watcher.start()
    try:
        api.get_target("slowhead").start()
        state = cluster.load()
        assert state is not None and frozen, "the test never saw the raylet to freeze"
        log = cluster.log_path.read_text(errors="replace")
        assert log.count("timed out during startup") == 1, log[-3000:]
        assert log.count("$ ") == 2  # both attempts' output kept
        assert not pid_alive(frozen[0])  # the failed attempt's processes were ended
        assert cluster.running() and JobsClient(
            state.address, token=cluster.token()).version()["ray_version"]
    finally:
        done.set()
        watcher.join()
        for pid in frozen:  # never leave a stopped process behind, even on failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        cluster.stop(remove_files=True)
    assert not cluster.processes()


def test_requirements_environment_is_built_on_the_node_and_reused(ray_project: RayProject
                                                                  ) -> None:
    """The nodes share this machine's disk: the agent builds our environment on the node
    (in the runs root's envs/), once, and the next run there reuses it."""
    p = ray_project
    # a new environment in every session: the runs root (and its envs/) outlives them
    p.write("requirements.txt", f"six!=0.0.{int.from_bytes(os.urandom(4), 'big')}\n")
    p.write("uses_six.py", "import sys, six\nprint('six', six.__version__, sys.prefix)\n")
    logs = []
    for _ in range(2):
        run = api.submit("uses_six.py", target=CLUSTER, requirements="requirements.txt")
        assert run.wait(timeout=300) is RunStatus.COMPLETED, (run.record.error, run.log())
        logs.append(run.log())
    assert "building environment" in logs[0] and "six 1." in logs[0]
    assert "reusing environment" in logs[1] and "building" not in logs[1]
    assert "/envs/" in logs[1].split("six 1.")[1]


def test_a_remote_cluster_installs_the_environment_with_rays_runtime_env(
        ray_project: RayProject, monkeypatch: pytest.MonkeyPatch) -> None:
    """By address with the job-log transport (a cluster that shares no disk with us): the
    requirements go to Ray's runtime_env, which installs them on the node."""
    p = ray_project
    p.write("requirements.txt", "six\n")
    p.write("uses_six.py", "import six\nprint('six', six.__version__)\n")
    cluster = p.target().cluster()
    monkeypatch.setenv("CLUSTER_TOKEN", cluster.token() or "")
    api.attach("remote-env", "ray", address=cluster.load().address, transport="job-log",
               token_env="CLUSTER_TOKEN", replace=True)
    run = api.submit("uses_six.py", target="remote-env", requirements="requirements.txt")
    assert run.wait(timeout=600) is RunStatus.COMPLETED, (run.record.error, run.log())
    assert "six 1." in run.log()
    assert "installed by Ray's runtime_env (pip) on the node" in run.log()
    assert cluster.client().info(run.id)["runtime_env"]["pip"]["packages"] == ["six"]
