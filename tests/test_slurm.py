"""The slurm target on a real Slurm: the embedded cluster the project starts itself
(munge, slurmctld, CLOUD-node slurmds on loopback; ``tests/slurmcluster.py``), once
per session. Nothing is mocked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from slurmcluster import CLUSTER, IDLE_SECONDS, MAX_NODES, SlurmProject, folder_of

from jupyter_compute import api
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runs import Run
from jupyter_compute.targets.slurm.cluster import BOOT_DELAY
from jupyter_compute.targets.slurm.launcher import (
    POWER_UP,
    batch_script,
    node_counts,
    sbatch_options,
    slurm_seconds,
)

from conftest import pid_alive

HELLO = """\
import os, time
print("hello from job", os.environ.get("SLURM_JOB_ID"), flush=True)
time.sleep(0.5)
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


def _wait_line(run: Run, text: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    for line in run.follow():
        if text in line:
            return line
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"no line with {text!r} in: {run.log()[-2000:]}")


def _scontrol(project: SlurmProject, *args: str) -> str:
    conf = project.target().launcher.slurm_conf()
    return subprocess.run(["scontrol", *args], env={**os.environ, "SLURM_CONF": conf},
                          capture_output=True, text=True, timeout=30).stdout


# -- no cluster needed -----------------------------------------------------------------


def test_sbatch_options_carry_every_option_quoted_as_one_argument() -> None:
    argv = sbatch_options({"partition": "gpu", "cpus_per_task": 4, "mem": "4G",
                           "gres": "gpu:1", "account": "lab", "qos": "high",
                           "constraint": "a100", "time": "30",
                           "sbatch_arg": ["--comment=two words", "--exclusive"]},
                          "run-1", "/w/runs/run 1", time_limit_seconds=90)
    assert argv[:4] == ["sbatch", "--parsable", "--job-name=run-1", "--chdir=/w/runs/run 1"]
    for expected in ("--partition=gpu", "--cpus-per-task=4", "--mem=4G", "--gres=gpu:1",
                     "--account=lab", "--qos=high", "--constraint=a100",
                     "--comment=two words", "--exclusive", "--nodes=1",
                     "--ntasks-per-node=1"):
        assert expected in argv
    assert "--time=2" in argv  # 90 s + the margin, in whole minutes; the run's own wins
    assert "--time=30" in sbatch_options({"time": "30"}, "r", "/w")


def test_batch_script_execs_the_agent_in_the_run_folder() -> None:
    script = batch_script(["/usr/bin/python3", "/rt/agent.py", "/w/run 1"], "/w/run 1")
    assert script.startswith("#!/bin/sh\n")
    assert "cd '/w/run 1' || exit 1\n" in script
    assert "exec /usr/bin/python3 /rt/agent.py '/w/run 1'\n" in script
    assert "export JUPYTER_COMPUTE_SLURM_JOB=1\n" in script  # the agent leaves Slurm's
    from jupyter_compute.agent import SLURM_JOB_ENV  # SIGTERMs' ends to the launcher

    assert SLURM_JOB_ENV == "JUPYTER_COMPUTE_SLURM_JOB"


def test_node_counts_and_slurm_times() -> None:
    assert node_counts("n1|idle~\nn2|alloc\nn3|idle\nn4|idle#\nn2|alloc\n") == {
        "current": 3, "idle": 1, "allocated": 1, "powered_down": 1, "pending": 1}
    assert slurm_seconds("5") == 300 and slurm_seconds("1:30") == 90
    assert slurm_seconds("1:00:00") == 3600 and slurm_seconds("1-2") == 93600


def test_repeatable_sbatch_arg_from_the_command_line() -> None:
    from jupyter_compute.targets import parse_kind_options

    assert parse_kind_options("slurm", ["--sbatch-arg", "--exclusive",
                                        "--sbatch-arg=--comment=a b", "--max-nodes", "3"]) \
        == {"sbatch_arg": ["--exclusive", "--comment=a b"], "max_nodes": "3"}


# -- the embedded cluster ----------------------------------------------------------------


def test_scales_from_zero_for_a_run_and_back_to_zero(slurm_project: SlurmProject) -> None:
    """First of the cluster tests, while no node is up: the run waits for a CLOUD node to
    power up (its RunWidget says so, the ClusterWidget counts it pending), the node
    count rises from 0, and falls back to 0 idle_seconds after the run."""
    from jupyter_compute.widgets.cluster import ClusterWidget
    from jupyter_compute.widgets.run import RunWidget

    p = slurm_project
    p.wait_nodes(lambda n: n["current"] == 0, timeout=IDLE_SECONDS + 60)
    p.write("hello.py", HELLO)
    # A node here boots in well under a second: make it take 3 s, as a cloud VM takes
    # minutes, so the wait can be seen.
    delay = folder_of(p) / BOOT_DELAY
    delay.write_text("3")
    try:
        cluster_widget = ClusterWidget(p.target(), interval=0.2)
        run = api.submit("hello.py", target=CLUSTER)
        run_widget = RunWidget(run, interval=0.2)
        headers, details, nodes_seen = set(), set(), []
        deadline = time.monotonic() + 180
        while not run.status().is_terminal() and time.monotonic() < deadline:
            details.add(f"{run.record.status}: {run.detail}")
            headers.add(run_widget.header.value)
            nodes_seen.append(run.target.nodes())
            time.sleep(0.2)
        run_widget.close()
    finally:
        delay.unlink()
    assert run.status() is RunStatus.COMPLETED, run.record.error
    assert f"Queued: {POWER_UP}" in details, details
    assert any(POWER_UP in h for h in headers), headers
    assert max(n["pending"] for n in nodes_seen) >= 1
    assert max(n["current"] for n in nodes_seen) >= 1
    p.wait_nodes(lambda n: n["current"] == 0, timeout=IDLE_SECONDS + 60)  # powered down
    time.sleep(1.5)  # the widget's next poll (its target caches nodes for 1 s)
    counts = [c for _, c, *_ in cluster_widget.points]
    pending = [q for _, _, q, _ in cluster_widget.points]
    cluster_widget.stop()
    assert counts[0] == 0 and max(counts) >= 1 and counts[-1] == 0, counts
    assert max(pending) >= 1, pending


def test_completed_and_failed_runs_are_jobs_with_their_state(
        slurm_project: SlurmProject) -> None:
    p = slurm_project
    p.write("hello.py", HELLO)
    p.write("fails.py", "import sys\nprint('about to fail')\nsys.exit(3)\n")
    ok_id = p.submit("hello.py", "--target", CLUSTER)
    bad_id = p.submit("fails.py", "--target", CLUSTER)
    ok, bad = Run.get(ok_id), Run.get(bad_id)
    assert ok.wait(timeout=180) is RunStatus.COMPLETED, ok.record.error
    assert bad.wait(timeout=180) is RunStatus.FAILED
    assert bad.record.exit_code == 3 and "code 3" in (bad.record.error or "")
    shown = p.show(ok_id)
    job = shown["target_job"]
    assert job["id"].isdigit() and job["state"] in ("COMPLETED", "COMPLETING")
    assert f"hello from job {job['id']}" in ok.log()
    assert "about to fail" in bad.log()
    assert p.show(bad_id)["target_job"]["id"] != job["id"]
    assert "RunState=" not in _scontrol(p, "show", "job", job["id"])  # a real job of Slurm
    assert f"JobId={job['id']}" in _scontrol(p, "show", "job", job["id"])


def test_max_run_duration_is_the_job_time_limit_and_times_out(
        slurm_project: SlurmProject) -> None:
    p = slurm_project
    p.write("slow.py", "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    run = api.submit("slow.py", target=CLUSTER, max_run_duration_seconds=3)
    _wait_line(run, "started")
    job_id = run.target.job(run.id)["id"]
    assert "TimeLimit=00:01:00" in _scontrol(p, "show", "job", job_id)  # 3 s + margin
    assert run.wait(timeout=120) is RunStatus.TIMED_OUT
    assert "max_run_duration_seconds=3" in (run.record.error or "")


def test_cancel_is_scancel_and_leaves_no_process(slurm_project: SlurmProject) -> None:
    p = slurm_project
    p.write("stubborn.py", STUBBORN)
    run_id = p.submit("stubborn.py", "--target", CLUSTER)
    run = Run.get(run_id)
    pids = [int(x) for x in _wait_line(run, "pids").split()[1:]]
    agent = run.target.status(run_id)["agent"]["pid"]
    job_id = run.target.job(run_id)["id"]
    began = time.monotonic()
    out = p.cli("cancel", run_id)
    assert out.returncode == 0 and "Canceled" in out.stdout, out.stderr
    while time.monotonic() - began < 5 and any(pid_alive(x) for x in [*pids, agent]):
        time.sleep(0.1)
    assert not [x for x in [*pids, agent] if pid_alive(x)], "processes outlived the cancel"
    assert Run.get(run_id).status() is RunStatus.CANCELED
    deadline = time.monotonic() + 30
    while "JobState=CANCELLED" not in _scontrol(p, "show", "job", job_id):
        assert time.monotonic() < deadline, _scontrol(p, "show", "job", job_id)
        time.sleep(0.5)


REQUEUED = """\
import os, sys, time
print("start", os.environ["SLURM_RESTART_COUNT"] if "SLURM_RESTART_COUNT" in os.environ
      else 0, flush=True)
if "SLURM_RESTART_COUNT" not in os.environ:
    time.sleep(600)  # the first start waits to be requeued
print("done", flush=True)
"""


def test_a_requeued_job_is_one_run_that_starts_again_within_seconds(
        slurm_project: SlurmProject) -> None:
    """Slurm requeues a running job (here ``scontrol requeue``; a node failure does the
    same): the run stays one run, waits with Slurm's word, and runs again with the job.
    The embedded cluster's credential lifetime lets it start again in 11 s, not 121 s."""
    p = slurm_project
    p.write("requeued.py", REQUEUED)
    run_id = p.submit("requeued.py", "--target", CLUSTER)
    run = Run.get(run_id)
    _wait_line(run, "start 0")
    job_id = run.target.job(run_id)["id"]
    _scontrol(p, "requeue", job_id)
    requeued = time.monotonic()
    assert run.wait(timeout=120) is RunStatus.COMPLETED, (run.record.error, run.log())
    assert time.monotonic() - requeued < 60, "the requeued job waited for Slurm's delay"
    log = run.log()
    assert "start 0" in log and "start 1" in log and "done" in log, log
    assert [r.id for r in api.runs(limit=None, workspace=p.root) if r.id == run_id] == [run_id]


def test_cancel_of_a_queued_job(slurm_project: SlurmProject) -> None:
    """A job that cannot start yet (held) is canceled by scancel, and the run with it."""
    p = slurm_project
    p.write("never.py", "print('never runs')\n")
    api.attach("hpc-held", "slurm", workspace=p.root, cluster=CLUSTER, sbatch_arg=["--hold"])
    try:
        run = api.submit("never.py", target="hpc-held")
        run.status()
        assert run.record.status == "Queued" and (run.detail or "").startswith("waiting: ")
        assert run.to_dict()["target_job"]["state"] == "PENDING"
        run.cancel()
        assert run.wait(timeout=60) is RunStatus.CANCELED
        assert "never runs" not in run.log()
    finally:
        api.detach("hpc-held", workspace=p.root)


def test_nodes_in_targets_json(slurm_project: SlurmProject) -> None:
    out = slurm_project.cli("targets", "--json")
    assert out.returncode == 0, out.stderr
    [found] = [t for t in json.loads(out.stdout) if t["name"] == CLUSTER]
    nodes = found["nodes"]
    assert nodes["max"] == MAX_NODES and nodes["min"] == 0 and nodes["running"] is True
    assert {"current", "idle", "allocated", "powered_down"} <= set(nodes)
    assert nodes["current"] + nodes["powered_down"] == MAX_NODES


def test_stop_ends_only_its_own_daemons(slurm_project: SlurmProject) -> None:
    """A second embedded cluster stops; the session's cluster and a process that merely
    shares a daemon's name live on (no killall, no name matching)."""
    p = slurm_project
    decoy = subprocess.Popen(["bash", "-c", "exec -a slurmd sleep 120"])
    try:
        api.attach("spare", "slurm", workspace=p.root, max_nodes=1, idle_seconds=5)
        spare = api.get_target("spare", p.root)
        spare.start()
        cluster = spare.launcher.cluster()
        state = cluster.load()
        assert len(cluster.processes(state)) >= 2  # munged, slurmctld (+ slurmscriptd)
        spare.stop()
        assert not cluster.processes(state)
        assert pid_alive(decoy.pid)
        assert p.target().launcher.cluster().running()
        assert spare.nodes()["running"] is False
    finally:
        decoy.kill()
        decoy.wait()
        api.get_target("spare", p.root).stop()
        shutil.rmtree(api.get_target("spare", p.root).launcher.cluster().folder,
                      ignore_errors=True)  # maybe /tmp/jc-slurm-<hash>
        api.detach("spare", workspace=p.root)


def test_daemons_listen_on_loopback_only(slurm_project: SlurmProject) -> None:
    state = slurm_project.target().launcher.cluster().load()
    text = Path(state.conf).read_text()
    assert f"SuspendTime={IDLE_SECONDS}\n" in text and "State=CLOUD" in text
    listening = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, st = line.split()[1], line.split()[3]
        if st == "0A":  # LISTEN
            addr, port = local.split(":")
            listening[int(port, 16)] = addr
    assert listening.get(state.ctld_port) == "0100007F"  # 127.0.0.1, not 0.0.0.0


# -- bad input: one line each, and no run recorded --------------------------------------


def _refused(p: SlurmProject, name: str, **options) -> str:
    p.write("ok.py", "print('ran')\n")
    if not options.get("local"):
        options["cluster"] = CLUSTER  # the session's cluster, not one of its own
    api.attach(name, "slurm", workspace=p.root, replace=True, **options)
    try:
        before = len(api.runs(workspace=p.root))
        out = p.cli("submit", "ok.py", "--target", name)
        assert out.returncode != 0, out.stdout
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1, out.stderr
        assert len(api.runs(workspace=p.root)) == before  # nothing half-written
        return lines[0]
    finally:
        api.detach(name, workspace=p.root)


def test_unknown_partition_is_one_line(slurm_project: SlurmProject) -> None:
    line = _refused(slurm_project, "bad-part", partition="nosuch")
    assert "invalid partition" in line.lower() and "'nosuch'" in line and "sinfo" in line


def test_impossible_request_fails_at_submit(slurm_project: SlurmProject) -> None:
    line = _refused(slurm_project, "too-big", cpus_per_task=64)  # nodes have os.cpu_count()
    assert "no node of the partition can run this request" in line
    assert "--cpus-per-task" in line


def test_sbatch_arg_that_is_not_an_option(slurm_project: SlurmProject) -> None:
    line = _refused(slurm_project, "bad-arg", sbatch_arg=["--no-such-option=1"])
    assert "--no-such-option" in line and "not an sbatch option" in line


def test_cluster_whose_daemons_are_down(slurm_project: SlurmProject, tmp_path) -> None:
    """An existing cluster (--local) whose controller does not answer."""
    conf = tmp_path / "slurm.conf"
    state = slurm_project.target().launcher.cluster().load()
    text = Path(state.conf).read_text()
    from jupyter_compute.targets.ray.cluster import free_ports

    conf.write_text(text.replace(f"SlurmctldPort={state.ctld_port}",
                                 f"SlurmctldPort={free_ports(1)[0]}"))
    line = _refused(slurm_project, "down", local=True, slurm_conf=str(conf))
    assert "does not answer" in line and "slurmctld" in line


def test_options_reach_the_job(slurm_project: SlurmProject) -> None:
    p = slurm_project
    p.write("hello.py", HELLO)
    api.attach("hpc-opts", "slurm", workspace=p.root, cluster=CLUSTER, partition="debug",
               cpus_per_task=1,
               mem="100M", time="5", sbatch_arg=["--comment=two words", "--nice=10"])
    try:
        run = api.submit("hello.py", target="hpc-opts")
        assert run.wait(timeout=180) is RunStatus.COMPLETED, run.record.error
        shown = _scontrol(p, "show", "job", run.target.job(run.id)["id"])
        for expected in ("Partition=debug", "MinMemoryNode=100M", "Comment=two words",
                         "Nice=10", "NumCPUs=1"):
            assert expected in shown, shown
        # --time is the agent's limit too; Slurm's is a minute later (whole minutes)
        assert "TimeLimit=00:06:00" in shown
    finally:
        api.detach("hpc-opts", workspace=p.root)


# -- sweeps: one job array ----------------------------------------------------------------

CURVE = """
import argparse, time
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser()
p.add_argument("--trial", type=int)
p.add_argument("--qualities")
a = p.parse_args()
quality = float(a.qualities.split(",")[a.trial - 1])
run = get_run()
for step in range(8):
    run.log("Accuracy", quality, step=step)
    time.sleep(0.5)
"""


def test_sweep_is_one_job_array_and_stops_single_tasks(slurm_project: SlurmProject) -> None:
    from jupyter_compute.sweep import BanditPolicy, SweepConfig, choice, sweep

    p = slurm_project
    p.write("curve.py", CURVE)
    config = SweepConfig(parameter_space={"--trial": choice(1, 2, 3, 4)}, sampling="grid",
                         policy=BanditPolicy(slack_factor=0.2),
                         primary_metric_name="Accuracy", primary_metric_goal="Maximize",
                         max_concurrent_runs=2)
    s = sweep("curve.py", config, target=CLUSTER, arguments=["--qualities", "0.9,0.3,0.9,0.2"])
    assert s.wait(timeout=300).value == "Completed", s.log()
    trials = {t["index"]: t for t in s.trials()}
    jobs = {i: p.show(t["run_id"])["target_job"] for i, t in trials.items()}
    arrays = {job["id"].split("_")[0] for job in jobs.values()}
    assert len(arrays) == 1, jobs  # one sbatch for the whole sweep
    [array] = arrays
    assert sorted(job["id"] for job in jobs.values()) == [f"{array}_{i}" for i in range(4)]
    assert "ArrayTaskThrottle=2" in _scontrol(p, "show", "job", array)
    assert "queued as one job array, 2 at a time" in s.log()
    stopped = {i for i, t in trials.items() if t["status"] == "Canceled"}
    assert stopped and stopped <= {2, 4}, s.log()
    for i, t in trials.items():
        if i in stopped:
            assert t["stop_reason"].startswith("stopped early by BanditPolicy")
            assert jobs[i]["state"] == "CANCELLED"  # that task alone
        else:
            assert t["status"] == "Completed" and jobs[i]["state"] == "COMPLETED", (
                t, jobs[i], Run.get(t["run_id"]).log()[-1500:])


def test_queued_runs_are_read_with_one_squeue_and_cancel_as_canceled(
        slurm_project: SlurmProject) -> None:
    """Reading the status of a job array's pending tasks asks Slurm once for all of
    them (a sweep reads each of its trials every second), not once per run. Canceled
    before they started, they are Canceled, though squeue forgets such tasks at once."""
    from jupyter_compute.runspec import resolve_spec

    p = slurm_project
    p.write("sleepy.py", "import time\ntime.sleep(600)\n")
    target = api.get_target(CLUSTER, p.root)
    specs = [resolve_spec("sleepy.py", target=CLUSTER, name=f"q{i}", source_dir=p.root)
             for i in range(5)]
    # one target object for all of them, as a sweep's controller has
    runs = [Run(record, target.workspace, target=target)
            for record, _ in target.submit_array(specs, 1)]
    try:
        launcher = target.launcher
        calls: list[list[str]] = []
        command = launcher.command
        launcher.command = lambda host, argv, **kw: (calls.append(argv), command(
            host, argv, **kw))[1]
        time.sleep(1.1)  # what the submit cached has expired
        details = [run.target.status(run.id).get("detail") for run in runs[1:]]
        assert [argv[0] for argv in calls] == ["squeue"], calls
        assert all(d and d.startswith("waiting") for d in details), details
    finally:
        for run in runs:
            run.cancel()
    for run in runs:
        assert run.wait(timeout=60) is RunStatus.CANCELED, (run.record.error, run.log())


def test_stopping_the_cluster_ends_its_runs_with_a_reason(slurm_project: SlurmProject) -> None:
    """A second cluster, stopped under a queued and a running run: both end Failed,
    saying so, and nothing of them is left."""
    p = slurm_project
    p.write("sleepy.py", "import time\nprint('sleeping', flush=True)\ntime.sleep(600)\n")
    api.attach("brief", "slurm", workspace=p.root, max_nodes=1, idle_seconds=60)
    brief = api.get_target("brief", p.root)
    try:
        running = api.submit("sleepy.py", target="brief")
        _wait_line(running, "sleeping")
        queued = api.submit("sleepy.py", target="brief", name="held")
        agent = running.target.status(running.id)["agent"]["pid"]
        brief.stop()
        assert not pid_alive(agent)
        for run in (running, queued):
            assert run.wait(timeout=60) is RunStatus.FAILED
            assert "was stopped" in (run.record.error or ""), run.record.error
    finally:
        brief.stop()
        shutil.rmtree(brief.launcher.cluster().folder, ignore_errors=True)
        api.detach("brief", workspace=p.root)


def test_a_time_limit_among_sbatch_args_is_the_agents_too() -> None:
    from jupyter_compute.targets.slurm.launcher import _time_arg

    assert _time_arg(["--exclusive", "--time=5"]) == "5"
    assert _time_arg(["-t", "1:00"]) == "1:00" and _time_arg(["-t10"]) == "10"
    assert _time_arg(["--exclusive"]) is None


def test_host_and_local_together_is_one_line(tmp_path) -> None:
    from jupyter_compute.exceptions import UsageError

    with pytest.raises(UsageError, match="--host and --local"):
        api.attach("both", "slurm", workspace=tmp_path, host="h", local=True)


def test_a_job_slurm_cannot_launch_is_released_then_fails_in_words(
        tmp_path_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every launch fails on a cluster whose slurmstepd sockets cannot be made (their path
    is too long: the limit the cluster folder normally keeps): the held job is released
    RELEASES times, then the run ends Failed with Slurm's reason. (Slurm may also fail
    such a job instead of holding it: then the run ends Failed in those words.)"""
    import jupyter_compute.targets.slurm.cluster as cluster_mod
    from jupyter_compute.targets.slurm.launcher import JOB_RECORD, RELEASES

    monkeypatch.setattr(cluster_mod, "MAX_FOLDER", 200)
    base = tmp_path_factory.mktemp("slurm-long")
    suffix = "/proj/.jupyter_compute/slurm/broken"  # the cluster's folder: 85 characters,
    pad = "x" * max(1, 85 - len(str(base)) - 1 - len(suffix))  # munge's socket fits,
    root = base / pad / "proj"                                  # slurmstepd's does not
    (root / ".jupyter_compute").mkdir(parents=True)
    (root / "ok.py").write_text("print('never')\n")
    api.attach("broken", "slurm", workspace=root, max_nodes=1, idle_seconds=60)
    target = api.get_target("broken", root)
    try:
        run = api.submit("ok.py", target="broken", source_dir=root, workspace=root)
        assert run.wait(timeout=240) is RunStatus.FAILED
        error = run.record.error or ""
        rec = json.loads((root / ".jupyter_compute" / "runs" / run.id / JOB_RECORD).read_text())
        if "launch failed requeued held" in error:  # Slurm held the job: released, in vain
            assert rec["releases"] == RELEASES, rec
        else:  # Slurm failed the job (at once, or after a release), as it does too
            assert error.startswith("the Slurm job failed before the agent started"), error
            assert rec.get("releases", 0) <= RELEASES, rec
    finally:
        target.stop()
