"""Sweeps end to end: real child runs on the local target (and a loopback sshd), the
real CLI, ``%sweep`` in a real kernel. Scripts are short and sweeps small (two trials
at a time) so the whole file stays within a minute or two."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from argparse import Namespace
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_compute import protocol
from jupyter_compute.config import TEMPLATES
from jupyter_compute.sweep import (
    AshaPolicy,
    BanditPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    Sweep,
    SweepConfig,
    TruncationSelectionPolicy,
    choice,
    sweep,
    uniform,
)
from jupyter_compute.sweep.controller import POINTS, STATE
from jupyter_compute.sweep.policies import Policy

from conftest import Project, pid_alive
from kernel import Kernel

#: Logs Accuracy per step; --penalty 1 is best. Writes its argv for the test to read.
TRAIN = """
import argparse, json, sys, time
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser()
p.add_argument("--penalty", type=float)
p.add_argument("--fixed")
a = p.parse_args()
with open("outputs/argv.json", "w") as f:
    json.dump(sys.argv[1:], f)
run = get_run()
for step in range(3):
    run.log("Accuracy", 0.9 - abs(a.penalty - 1) * (0.3 + 0.05 * step), step=step)
    time.sleep(0.05)
"""

#: A constant learning curve of known quality: the answer each policy must find.
CURVE = """
import argparse, os, time
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser()
p.add_argument("--trial", type=int)
p.add_argument("--qualities")
p.add_argument("--steps", type=int, default=8)
p.add_argument("--sleep", type=float, default=0.15)
p.add_argument("--gate")  # a file: the first step lasts until the test removes it
a = p.parse_args()
quality = float(a.qualities.split(",")[a.trial - 1])
run = get_run()
for step in range(a.steps):
    run.log("loss", 1 - quality, step=step)
    run.log("Accuracy", quality, step=step)
    deadline = time.monotonic() + 300  # bounded: a failed test leaves no trial waiting
    while step == 0 and a.gate and os.path.exists(a.gate) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(a.sleep)
"""
QUALITIES = "0.9,0.3,0.9,0.2"


def cli_json(project: Project, *args: str, timeout: float = 120) -> tuple[dict, str, int]:
    out = project.cli(*args, timeout=timeout)
    return (json.loads(out.stdout) if out.stdout.strip().startswith("{") else {},
            out.stderr, out.returncode)


def child(project: Project, run_id: str) -> dict:
    return project.show(run_id)


# -- the issue's YAML through the CLI ---------------------------------------------------


def test_issue_yaml_runs_unchanged_through_the_cli(project: Project) -> None:
    project.write("train.py", TRAIN)
    project.write("sweep.yml", TEMPLATES["sweep.yml"])
    result, err, code = cli_json(project, "sweep", "train.py", "--config", "sweep.yml",
                                 "--wait", "--json", "--", "--fixed", "x y")
    assert code == 0, err
    assert result["kind"] == "sweep" and result["status"] == "Completed"
    # Random sampling never repeats a configuration (as HyperDrive): 3 trials, not 8.
    children = result["children"]
    assert sorted(c["parameters"]["--penalty"] for c in children) == [0.5, 1, 1.5]
    for c in children:
        penalty = c["parameters"]["--penalty"]
        argv = json.loads((project.run_dir(c["id"]) / "outputs" / "argv.json").read_text())
        assert argv == ["--fixed", "x y", "--penalty", str(penalty)]
        assert c["status"] == "Completed" and c["stop_reason"] is None
        assert c["primary_metric"] == pytest.approx(0.9 - abs(penalty - 1) * 0.4)
        shown = child(project, c["id"])
        assert shown["parent_id"] == result["id"] and shown["status"] == "Completed"
    best = result["best_run"]
    assert best["parameters"] == {"--penalty": 1} and best["primary_metric"] == 0.9
    assert f"best trial {best['trial']} {best['id']}" in err  # the log, on stderr with --json
    assert result["warnings"] == []
    assert project.show(result["id"])["status"] == "Completed"


def test_cli_without_wait_prints_the_id_and_the_sweep_goes_on(project: Project) -> None:
    project.write("train.py", TRAIN)
    project.write("sweep.yml", TEMPLATES["sweep.yml"])
    out = project.cli("sweep", "train.py", "-c", "sweep.yml", "--seed", "5", "--name", "quick")
    assert out.returncode == 0, out.stderr
    sweep_id = out.stdout.strip()
    assert "quick" in sweep_id and "random sampling (seed 5)" in out.stderr
    s = Sweep.get(sweep_id)
    assert s.wait(timeout=60).value == "Completed"
    assert len(s.trials()) == 3 and s.state()["seed"] == 5


def test_invalid_config_is_one_line_through_the_cli(project: Project) -> None:
    project.write("train.py", TRAIN)
    project.write("sweep.yml", TEMPLATES["sweep.yml"].replace("expression: choice",
                                                              "expression: uniformm"))
    out = project.cli("sweep", "train.py", "--config", "sweep.yml")
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0, out.stderr
    assert "sweep.yml:6: unknown expression 'uniformm' — did you mean 'uniform'?" in out.stderr


# -- policies end to end ----------------------------------------------------------------


@pytest.mark.parametrize("policy,stopped", [
    (BanditPolicy(slack_factor=0.2), {2, 4}),
    (MedianStoppingPolicy(), {2, 4}),
    (TruncationSelectionPolicy(truncation_percentage=50), {2, 4}),
    (AshaPolicy(reduction_factor=2), {2, 4}),
    (NoTerminationPolicy(), set()),
], ids=lambda p: p.type_name if hasattr(p, "type_name") else "")
def test_each_policy_stops_the_runs_it_should(project: Project, policy: Policy,
                                              stopped: set[int]) -> None:
    project.write("curve.py", CURVE)
    config = SweepConfig(parameter_space={"--trial": choice(1, 2, 3, 4)}, sampling="grid",
                         policy=policy, primary_metric_name="Accuracy",
                         primary_metric_goal="Maximize", max_concurrent_runs=2)
    s = sweep("curve.py", config, arguments=["--qualities", QUALITIES])
    assert s.wait(timeout=90).value == "Completed", s.log()
    trials = {t["index"]: t for t in s.trials()}
    assert {i for i, t in trials.items() if t["status"] == "Canceled"} == stopped, s.log()
    name = policy.type_name
    for i, t in trials.items():
        shown = child(project, t["run_id"])
        if i in stopped:
            assert shown["status"] == "Canceled"
            assert shown["error"] == t["stop_reason"]
            assert shown["error"].startswith(f"stopped early by {name}: ")
            assert "Accuracy" in shown["error"] and "interval" in shown["error"]
            st = json.loads((project.run_dir(t["run_id"]) / protocol.STATUS).read_text())
            assert st["stop_reason"] == t["stop_reason"]  # in the run folder too
            assert t["intervals"] < 8
        else:
            assert shown["status"] == "Completed" and shown["error"] is None
            assert t["intervals"] == 8
    assert s.best()["index"] == 1  # ties: the earlier trial
    if stopped:
        assert f"trial 2 ({trials[2]['run_id']}) stopped early by {name}" in s.log()


# -- reproducibility, limits -------------------------------------------------------------


def test_seeded_random_sweeps_repeat_their_parameters(project: Project) -> None:
    project.write("echo.py", "import sys\nfrom jupyter_compute.tracking import get_run\n"
                             "get_run().log('x', float(sys.argv[2]))\n")
    config = SweepConfig(parameter_space={"--x": uniform(0, 1)},
                         primary_metric_name="x", max_total_runs=3, max_concurrent_runs=2)
    first = sweep("echo.py", config, seed=11, wait=True)
    second = sweep("echo.py", config, seed=11, wait=True)
    other = sweep("echo.py", config, seed=12, wait=True)
    params = [[t["params"]["--x"] for t in s.trials()] for s in (first, second, other)]
    assert params[0] == params[1] != params[2]
    # The value each script received is the one recorded.
    assert [t["metric"] for t in first.trials()] == params[0]


def test_max_concurrent_runs_and_max_total_runs_hold(project: Project) -> None:
    project.write("nap.py", "import time\nfrom jupyter_compute.tracking import get_run\n"
                            "get_run().log('m', 1.0)\ntime.sleep(0.6)\n")
    config = SweepConfig(parameter_space={"--x": uniform(0, 1)}, primary_metric_name="m",
                         max_total_runs=5, max_concurrent_runs=2)
    s = sweep("nap.py", config, wait=True)
    kids = [r.record for r in s.children()]
    assert len(kids) == 5 and all(k.status == "Completed" for k in kids)
    spans = [(k.started, k.ended) for k in kids]
    for start, _ in spans:  # at any start, at most two runs are under way
        assert sum(a <= start < b for a, b in spans) <= 2


def test_max_duration_stops_the_sweep_with_a_reason(project: Project) -> None:
    project.write("long.py", "import time\nfrom jupyter_compute.tracking import get_run\n"
                             "get_run().log('m', 1.0)\ntime.sleep(60)\n")
    config = SweepConfig(parameter_space={"--x": uniform(0, 1)}, primary_metric_name="m",
                         max_total_runs=4, max_concurrent_runs=2, max_duration_minutes=0.03)
    s = sweep("long.py", config)
    assert s.wait(timeout=40).value == "Completed", s.log()
    assert s.state()["ended_by"] == "max_duration_minutes"
    trials = s.trials()
    assert len(trials) == 2 and all(t["status"] == "Canceled" for t in trials)
    for t in trials:
        assert child(project, t["run_id"])["error"] == \
            "canceled: its sweep reached max_duration_minutes=0.03"


# -- warnings, failures, cancel ---------------------------------------------------------


def test_metric_name_mismatch_is_a_visible_warning(project: Project) -> None:
    project.write("lower.py", "import time\nfrom jupyter_compute.tracking import get_run\n"
                              "for i in range(6):\n"
                              "    get_run().log('accuracy', 0.5, step=i); time.sleep(0.15)\n")
    project.write("sweep.yml", TEMPLATES["sweep.yml"])
    out = project.cli("sweep", "lower.py", "--config", "sweep.yml", "--wait")
    assert out.returncode == 1
    assert "warning: 3 trials ended without logging the primary metric 'Accuracy' " \
           "(logged: accuracy) — did you mean 'accuracy'?" in out.stderr
    assert "error: no trial logged the primary metric 'Accuracy'" in out.stderr
    # While the trials ran, the sweep already said so in its log.
    assert "WARNING: no trial has logged the primary metric 'Accuracy' yet, but trial" \
        in out.stdout


def test_a_broken_script_stops_the_sweep_early(project: Project) -> None:
    project.write("broken.py", "raise SystemExit('no data here')\n")
    config = SweepConfig(parameter_space={"--x": uniform(0, 1)}, primary_metric_name="m",
                         max_total_runs=20, max_concurrent_runs=2)
    s = sweep("broken.py", config)
    assert s.wait(timeout=60).value == "Failed"
    assert len(s.trials()) < 6  # not all 20
    assert "trials failed; trial 1: no data here" in (s.record.error or "")


def test_canceling_the_sweep_cancels_its_children(project: Project) -> None:
    project.write("long.py", "import time\nfrom jupyter_compute.tracking import get_run\n"
                             "get_run().log('m', 1.0)\ntime.sleep(60)\n")
    config = SweepConfig(parameter_space={"--x": uniform(0, 1)}, primary_metric_name="m",
                         max_total_runs=6, max_concurrent_runs=2)
    s = sweep("long.py", config)
    deadline = time.monotonic() + 30
    while sum(t["status"] == "Running" for t in s.trials()) < 2:
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.1)
    out = project.cli("cancel", s.id)  # the ordinary run command works on a sweep
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"run {s.id} Canceled"
    assert s.status().value == "Canceled"
    kids = s.children()
    assert len(kids) == 2
    for kid in kids:
        assert kid.status().value == "Canceled"
        assert kid.record.error == f"canceled with its sweep {s.id}"
        st = json.loads((project.run_dir(kid.id) / protocol.STATUS).read_text())
        assert not pid_alive(st["script"]["pid"]) and not pid_alive(st["agent"]["pid"])
    controller = json.loads((project.run_dir(s.id) / protocol.STATUS).read_text())["agent"]
    deadline = time.monotonic() + 5
    while pid_alive(controller["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(controller["pid"])


def test_to_dict_is_the_show_shape_of_a_sweep(project: Project) -> None:
    project.write("curve.py", CURVE)
    config = SweepConfig(parameter_space={"--trial": choice(1, 2)}, sampling="grid",
                         policy=BanditPolicy(slack_factor=0.1), primary_metric_name="Accuracy")
    s = sweep("curve.py", config, arguments=["--qualities", "0.9,0.2", "--steps", "6"],
              wait=True)
    d = s.to_dict()
    assert d["kind"] == "sweep" and d["status"] == "Completed" and d["target"] == "local"
    assert d["primary_metric"] == {"name": "Accuracy", "goal": "Maximize"}
    assert [(c["trial"], c["parameters"], c["status"]) for c in d["children"]] == [
        (1, {"--trial": 1}, "Completed"), (2, {"--trial": 2}, "Canceled")]
    assert d["children"][1]["stop_reason"].startswith("stopped early by BanditPolicy: interval")
    assert d["best_run"]["id"] == d["children"][0]["id"]
    assert d["best_run"]["primary_metric"] == 0.9
    json.dumps(d)  # JSON all the way down
    text = s.summary().text()
    assert "best: trial 1" in text and "stopped early by BanditPolicy" in text
    # The parent's own metrics: the best value so far, and which run was best.
    metrics = s.metrics()
    assert metrics["best Accuracy"][-1]["value"] == 0.9
    assert s.tags()["best_run"] == d["best_run"]["id"]


def test_a_stopped_trial_says_the_policys_reason_in_its_log_and_in_show(
        project: Project) -> None:
    """A trial its policy stopped is not "canceled by request": its own log and
    ``jupyter compute show TRIAL`` give the policy's reason."""
    from jupyter_compute.runs import Run

    project.write("curve.py", CURVE)
    config = SweepConfig(parameter_space={"--trial": choice(1, 2)}, sampling="grid",
                         policy=BanditPolicy(slack_factor=0.1), primary_metric_name="Accuracy")
    s = sweep("curve.py", config, arguments=["--qualities", "0.9,0.2", "--steps", "6"],
              wait=True)
    stopped = {t["index"]: t for t in s.trials()}[2]
    reason = stopped["stop_reason"]
    assert stopped["status"] == "Canceled" and reason.startswith(
        "stopped early by BanditPolicy: interval"), stopped
    log = Run.get(stopped["run_id"]).log()
    assert f"[agent] {reason}" in log, log
    assert "canceled by request" not in log
    out = project.cli("show", stopped["run_id"])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "Canceled (stopped early by its sweep)" in lines[3], out.stdout
    assert "Stopped early by BanditPolicy: interval" in out.stdout
    assert reason[len("stopped early"):] in out.stdout  # the whole reason, not a summary
    assert "error:" not in out.stdout  # a decision, not an error


def test_a_sweep_reads_as_a_sweep_wherever_it_is_reattached(project: Project) -> None:
    """``Run.get``, ``runs()``, ``show`` and a display give the sweep's own form: a
    ``Sweep`` handle (its best trial, its trials table), not a plain run."""
    from jupyter_compute.api import runs
    from jupyter_compute.runs import Run

    project.write("curve.py", CURVE)
    config = SweepConfig(parameter_space={"--trial": choice(1)}, sampling="grid",
                         primary_metric_name="Accuracy")
    s = sweep("curve.py", config, arguments=["--qualities", "0.9", "--steps", "2"],
              wait=True)
    run = Run.get(s.id)
    assert isinstance(run, Sweep) and run.best()["metric"] == 0.9
    assert [type(r).__name__ for r in runs() if r.id == s.id] == ["Sweep"]
    assert run.primary_metric() == {"name": "Accuracy", "value": 0.9, "step": None}
    shown = run._repr_mimebundle_()["text/plain"]  # no kernel here: the static summary
    assert shown.startswith(f"Sweep {s.id}") and "best: trial 1" in shown
    out = project.cli("show", s.id)
    assert out.returncode == 0 and "best: trial 1" in out.stdout
    child = run.children()[0]  # trial ids and sweep ids are made alike
    assert re.fullmatch(r"\d{8}-\d{4}-curve-sweep-1-[0-9a-f]{4}", child.id)
    assert re.fullmatch(r"\d{8}-\d{4}-curve-sweep-[0-9a-f]{4}", s.id)


# -- notebooks --------------------------------------------------------------------------


def test_a_notebook_sweep_gets_parameters_without_dashes(project: Project) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("penalty = 0.0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(
        "from jupyter_compute.tracking import get_run\n"
        "get_run().log('Accuracy', 1 - abs(penalty - 1))")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, project.root / "explore.ipynb")
    config = SweepConfig(parameter_space={"--penalty": choice(0.5, 1)}, sampling="grid",
                         primary_metric_name="Accuracy", max_concurrent_runs=2)
    s = sweep("explore.ipynb", config, wait=True)
    assert s.status().value == "Completed", s.log()
    assert {t["params"]["--penalty"]: t["metric"] for t in s.trials()} == {0.5: 0.5, 1: 1.0}


# -- the notebook front end -------------------------------------------------------------


def test_magic_shows_a_live_widget_and_waits(project: Project, kernel: Kernel) -> None:
    k = kernel
    project.write("train.py", TRAIN)
    project.write("sweep.yml", TEMPLATES["sweep.yml"])
    out = k.run("%sweep train.py --config sweep.yml -o s --seed 3")
    assert out.status == "ok", out.error_text
    assert out.seconds < 3 and out.stdout == ""
    assert any("application/vnd.jupyter.widget-view+json" in d for d in out.data)
    assert k.value("s.wait(60)") == "Completed"
    out = k.run("from jupyter_compute.widgets.sweep import SweepWidget\n"
                "w = SweepWidget(s)\nw.follower.join(30)\n"
                "print((len(w.rows), w.status, w.table.best == s.best()['run_id'], "
                "w.follower.error))")
    assert out.stdout.strip() == "(3, 'Completed', True, None)", out.error_text
    # The curves chart holds every value each trial logged (3 each), one series a trial
    # (ten trials or fewer: one to a colour).
    assert k.value("(w._figures['curves'].point_count(), len(w._figures['curves'].series))") \
        == "(9, 3)"
    # A click on a trial (the browser sets `selected`) opens its RunWidget below.
    out = k.run("w.table.selected = w.rows[1]['run_id']\n"
                "print(type(w.detail.children[0]).__name__, w.detail.children[0].run.id "
                "== w.rows[1]['run_id'])")
    assert out.stdout.strip() == "RunWidget True", out.error_text
    shown = k.run("s").data[-1]  # a sweep as a cell's value: its live view
    assert "application/vnd.jupyter.widget-view+json" in shown and "text/html" in shown
    out = k.run("%sweep train.py --config sweep.yml --wait --seed 4")
    assert out.status == "ok", out.error_text
    assert "Completed: best trial" in out.stdout and "(--penalty 1)" in out.stdout


def test_cell_sweep_runs_the_cell(project: Project, kernel: Kernel) -> None:
    k = kernel
    project.write("sweep.yml", TEMPLATES["sweep.yml"])
    ns = Namespace(path=None, config="sweep.yml", target=None, name=None, seed=1, wait=True,
                   out="cs")
    cell = ("import sys\nfrom jupyter_compute.tracking import get_run\n"
            "get_run().log('Accuracy', float(sys.argv[2]))\n")
    out = k.run("from argparse import Namespace\n"
                "from jupyter_compute.sweep import magic_main\n"
                f"magic_main(get_ipython(), Namespace(**{vars(ns)!r}), [], cell={cell!r})")
    assert out.status == "ok", out.error_text
    assert "best trial" in out.stdout and "(--penalty 1.5)" in out.stdout
    assert k.value("cs.best()['metric']") == "1.5"


def test_sweep_survives_its_kernel_and_reattaches(project: Project) -> None:
    project.write("curve.py", CURVE)
    project.write("sweep.yml", """\
        sampling:
          type: grid
          parameter_space:
          - {name: --trial, expression: choice, values: [1, 2, 3]}
        primary_metric_name: Accuracy
        primary_metric_goal: Maximize
        max_concurrent_runs: 2
        """)
    first = Kernel(project.root)
    try:
        first.run("%load_ext jupyter_compute")
        out = first.run("%sweep curve.py --config sweep.yml -o s -- --qualities 0.1,0.5,0.9 "
                        "--steps 6 --sleep 0.2")
        assert out.status == "ok", out.error_text
        sweep_id = first.value("s.id")
    finally:
        first.shutdown()  # the kernel goes away mid-sweep; the sweep does not
    second = Kernel(project.root)
    try:
        code = f"from jupyter_compute.sweep import Sweep\ns = Sweep.get({sweep_id[-6:]!r})\ns"
        out = second.run(code)
        assert out.status == "ok", out.error_text
        assert any("application/vnd.jupyter.widget-view+json" in d for d in out.data)
        assert second.value("s.wait(60)") == "Completed"
        assert second.value("[t['status'] for t in s.trials()]") == \
            "['Completed', 'Completed', 'Completed']"
        assert second.value("s.best()['params']") == "{'--trial': 3}"
    finally:
        second.shutdown()


def test_widget_with_150_trials_never_blocks_the_kernel(project: Project,
                                                       kernel: Kernel) -> None:
    """A synthetic sweep folder of 150 trials, rewritten 4 times a second as a
    controller would, while the kernel keeps answering."""
    from jupyter_compute.store import RunRecord
    from jupyter_compute.workspace import find

    ws = find(start=project.root)
    sweep_id = "20260101-0000-synthetic-sweep-0001"
    folder = ws.run_dir(sweep_id)
    folder.mkdir(parents=True)
    now = protocol.utcnow()
    # The "controller" is this test process: alive, so the sweep reads as Running.
    protocol.write_json_atomic(str(folder / protocol.STATUS), {
        "status": "Running", "created": now, "agent": protocol.process_identity(os.getpid())})
    ws.store.insert(RunRecord(id=sweep_id, name="synthetic", target="local", kind="sweep",
                              status="Running", created=now, script="x.py", arguments=[],
                              source_dir=str(project.root),
                              snapshot={"id": "0" * 64, "files": 0, "bytes": 0, "new_files": 0,
                                        "new_bytes": 0}))

    def state(n: int, status: str = "Running") -> dict:
        trials = [{"index": i, "run_id": f"run-{i}", "params": {"--lr": i / 1000, "--opt":
                   "adam" if i % 2 else "sgd"}, "arguments": ["--lr", str(i / 1000)],
                   "status": "Completed" if i < n - 2 else "Running", "metric": i / n,
                   "intervals": 40, "stop_reason": None, "error": None, "started": now,
                   "ended": now} for i in range(1, n + 1)]
        return {"id": sweep_id, "name": "synthetic", "script": "x.py", "target": "local",
                "status": status, "primary_metric": {"name": "acc", "goal": "Maximize"},
                "sampling": "random", "policy": "NoTerminationPolicy()", "max_total_runs": 200,
                "max_concurrent_runs": 8, "parameters": ["--lr", "--opt"], "trials": trials,
                "best": trials[-1], "warnings": []}

    def points(first: int, last: int) -> str:
        return "".join(json.dumps({"trial": t, "interval": i, "value": i / 40}) + "\n"
                       for t in range(first, last + 1) for i in range(1, 41))

    protocol.write_json_atomic(str(folder / STATE), state(120))
    (folder / POINTS).write_text(points(1, 120))
    k = kernel
    out = k.run(f"from jupyter_compute.sweep import Sweep\n"
                f"from jupyter_compute.widgets.sweep import SweepWidget\n"
                f"w = SweepWidget(Sweep.get({sweep_id!r}))\nw")
    assert out.status == "ok", out.error_text
    slowest, started = 0.0, time.monotonic()
    for n in range(121, 151):  # 30 new trials at 4 writes a second: 7.5 s of churn
        protocol.write_json_atomic(str(folder / STATE), state(n))
        with open(folder / POINTS, "a") as f:
            f.write(points(n, n))
        out = k.run("1 + 1")
        assert out.status == "ok"
        slowest = max(slowest, out.seconds)
        time.sleep(0.25)
    assert slowest < 1.0  # the kernel answered throughout
    protocol.write_json_atomic(str(folder / STATE), state(150, "Completed"))
    assert k.value("w.follower.join(10) or (len(w.rows), w.status, w.follower.error)") == \
        "(150, 'Completed', None)"
    assert k.value("w._figures['curves'].point_count()") == str(150 * 40)
    # At most four updates a second, however fast the folder changes.
    elapsed = time.monotonic() - started
    assert int(k.value("w.updates")) <= 4 * elapsed + 3


# -- a remote target --------------------------------------------------------------------


@pytest.fixture
def ssh_target(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    import sshd

    reason = sshd.unavailable()
    if reason:
        pytest.fail(reason, pytrace=False)
    from jupyter_compute import api

    # sshd reads the authorized keys as the user: the folder must be traversable.
    root = Path(tempfile.mkdtemp(prefix="jc-sweep-sshd-"))
    root.chmod(0o755)
    monkeypatch.setenv("HOME", str(project.root.parent / "home"))  # no user known_hosts
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    sshd.ensure_user(sshd.USER)
    key = sshd.make_key(root / "id_sweep")
    workdir = f"jc-sweep-{os.getpid()}"
    try:
        with sshd.SSHServer(root / "server", "127.0.0.4") as server:
            server.authorize(sshd.USER, key)
            server.start()
            api.attach("vm", "ssh", host=server.address, port=server.port, user=sshd.USER,
                       key=str(key), workdir=f"~/{workdir}", connect_timeout=5,
                       trust_host_key=server.fingerprint)
            yield "vm"
    finally:
        shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def test_twenty_trials_on_an_ssh_target(project: Project, ssh_target: str) -> None:
    project.write("quad.py", "import sys\nfrom jupyter_compute.tracking import get_run\n"
                             "x = float(sys.argv[2])\n"
                             "for step in range(3):\n"
                             "    get_run().log('loss', (x - 0.3) ** 2 + 1 / (step + 1))\n")
    config = SweepConfig(parameter_space={"--x": uniform(0, 1)}, primary_metric_name="loss",
                         primary_metric_goal="Minimize", max_total_runs=20,
                         max_concurrent_runs=4, policy=BanditPolicy(slack_amount=0.5))
    s = sweep("quad.py", config, target=ssh_target, seed=1)
    assert s.wait(timeout=240).value == "Completed", s.log()
    trials = s.trials()
    assert len(trials) == 20
    assert all(t["status"] in ("Completed", "Canceled") for t in trials), s.log()
    for t in trials:
        assert child(project, t["run_id"])["target"] == ssh_target
        if t["status"] == "Completed":
            assert t["metric"] == pytest.approx((t["params"]["--x"] - 0.3) ** 2 + 1 / 3)
    best = s.best()
    assert best is not None and abs(best["params"]["--x"] - 0.3) < 0.15


# -- in a browser -----------------------------------------------------------------------


def test_sweep_widget_in_jupyterlab_sorts_and_opens_a_trial(tmp_path: Path) -> None:
    """JupyterLab in headless Chromium: the trials table fills in live, sorts on a
    header click, and a click on a trial opens its RunWidget; once the sweep has ended
    its output is the static summary. The trials hold their first step until the test
    removes their gate file, so the sweep stays live until the clicks are done however
    slow the machine is."""
    import nbformat
    from playwright.sync_api import sync_playwright

    from labserver import JupyterLab, launch_chromium, run_all_cells

    root = tmp_path / "lab-root"
    (root / ".jupyter_compute").mkdir(parents=True)
    (root / "curve.py").write_text(CURVE)
    (root / "sweep.yml").write_text(
        "sampling:\n  type: grid\n  parameter_space:\n"
        "  - {name: --trial, expression: choice, values: [1, 2, 3]}\n"
        "primary_metric_name: Accuracy\nprimary_metric_goal: Maximize\n"
        "max_concurrent_runs: 3\n")
    nb = nbformat.v4.new_notebook()
    gate = tmp_path / "gate"
    gate.touch()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext jupyter_compute"),
                nbformat.v4.new_code_cell("%sweep curve.py --config sweep.yml -- "
                                          "--qualities 0.5,0.9,0.7 --steps 4 --sleep 0.2 "
                                          f"--gate {gate}")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "sweep.ipynb")
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    lab = JupyterLab(root, tmp_path / "lab-state").start()
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            try:
                run_all_cells(page, lab, "sweep.ipynb")
                rows = page.locator(".jc-trials tbody tr")
                deadline = time.monotonic() + 120
                while rows.count() < 3 and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert rows.count() == 3
                deadline = time.monotonic() + 60
                while any(v not in page.locator(".jc-trials").inner_text()
                          for v in ("0.5", "0.9", "0.7")):
                    assert time.monotonic() < deadline, "the trials reported no metric"
                    time.sleep(0.2)
                # Sorted by the metric, best first and highlighted.
                first = rows.first.inner_text()
                assert "0.9" in first and "jc-best" in (rows.first.get_attribute("class") or "")
                page.locator(".jc-trials th", has_text="Accuracy").click()  # ascending now
                deadline = time.monotonic() + 30
                while "0.5" not in rows.first.inner_text():
                    assert time.monotonic() < deadline, "clicking the header did not sort"
                    time.sleep(0.1)
                rows.first.click()  # opens the trial with quality 0.5: trial 1
                page.locator(".jupyter-widgets", has_text="curve-sweep-1").first.wait_for(
                    timeout=30_000)
                time.sleep(1)
                page.screenshot(path=str(artifacts / "browser-sweep-widget.png"), full_page=True)
                assert page.locator(".jc-trials").count() == 1  # still live until now
                gate.unlink()  # the trials go on and end
                # Ended: the output is the static summary, every trial Completed.
                page.locator(".jupyter-compute-sweep").wait_for(timeout=90_000)
                assert page.locator(".jc-trials").count() == 0
                assert page.locator(".jupyter-compute-sweep tbody tr",
                                    has_text="Completed").count() == 3
            except Exception:
                page.screenshot(path=str(artifacts / "browser-sweep-failure.png"),
                                full_page=True)
                raise
            finally:
                browser.close()
    finally:
        gate.unlink(missing_ok=True)
        lab.stop()
