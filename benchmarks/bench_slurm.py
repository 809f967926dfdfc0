"""What does a run on the slurm target cost over a bare sbatch on the same cluster?

Starts one embedded Slurm cluster (4 CLOUD nodes of 2 CPUs: 8 slots, powered up
first and kept up) in a scratch workspace and measures, in the same session, the
issue's three goals:

  submit → Running      submit() until the run is Running (the agent started the
                        script), vs bare ``sbatch --wrap "python hello.py"`` until squeue
                        says RUNNING (the baseline), submitted side by side so both
                        wait for the same scheduling cycle; medians, idle powered-up
                        nodes, at a random phase of slurmctld's one-second cycle
  200 from 10 procs     200 runs submitted by 10 processes at once: 200 recorded,
                        200 distinct jobs, every run Completed (none lost)
  sweep as job array    32 trials of 1 s, 8 at a time, as one job array, vs the ideal
                        ceil(32/8) × 1 s, a bare ``sbatch --array=0-31%8`` of 1 s jobs
                        (what Slurm alone costs here), the same bare array of the
                        trial script itself (no agent, no sweep), and the same sweep
                        on the local target; medians of --sweep-repeat
                        alternated reps, each at any phase of slurmctld's cycle

Only this cluster's daemons are stopped at the end.

    python benchmarks/bench_slurm.py [--repeat 15] [--runs 200] [--procs 10]
                                     [--sweep-repeat 5] [--only running|many|sweep]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELLO = "import time\nprint('first line', flush=True)\ntime.sleep(0.2)\n"
TRIAL = """
import argparse, time
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser()
p.add_argument("--x", type=float)
a = p.parse_args()
time.sleep(1.0)
get_run().log("score", a.x)
"""
POLL = 0.01
NAME = "bench-hpc"


def slurm(conf: str, *argv: str) -> str:
    return subprocess.run(argv, env={**os.environ, "SLURM_CONF": conf}, capture_output=True,
                          text=True, check=True, timeout=60).stdout


def side_by_side(conf: str, root: Path) -> tuple[float, float]:
    """A bare ``sbatch --wrap`` of the same script and our submit, one right after the
    other, so both wait for the same slurmctld scheduling cycle; then each one's seconds
    from its own submit: bare until squeue says RUNNING, ours until the run is Running
    (its agent started the script on the node).

    slurmctld starts jobs on a one-second cycle (the backfill pass, ``bf_interval=1``),
    so a lone submit waits 0-1 s for the next pass depending on when it lands; timed
    apart, two submits measure mostly that phase (with a fixed pause between them,
    always the same phase), not what each adds.
    """
    from jupyter_compute import api
    from jupyter_compute.protocol import RunStatus

    t0 = time.perf_counter()
    job = slurm(conf, "sbatch", "--parsable", f"--chdir={root}", "--output=/dev/null",
                f"--wrap={sys.executable} hello.py").strip()
    t1 = time.perf_counter()
    run = api.submit("hello.py", target=NAME, workspace=root)
    bare = ours = None
    while bare is None or ours is None:
        if bare is None and slurm(conf, "squeue", "-h", "--states=all", "-j", job, "-o",
                                  "%T").strip() in ("RUNNING", "COMPLETING", "COMPLETED"):
            bare = time.perf_counter() - t0
        if ours is None and run.status() not in (RunStatus.QUEUED, RunStatus.PREPARING):
            ours = time.perf_counter() - t1
        time.sleep(POLL)
    run.wait(timeout=120)
    return bare, ours


class Printed(dict):
    """The results, each printed as it comes (a long run stopped midway keeps those)."""

    def __setitem__(self, key: str, value: object) -> None:
        super().__setitem__(key, value)
        print(f"{key}: {value}", flush=True)


def submit_many(args: tuple[str, int]) -> list[str]:
    """One of the processes of the concurrency goal: ``count`` submits, their run ids."""
    root, count = args
    from jupyter_compute import api

    return [api.submit("hello.py", target=NAME, workspace=root).id for _ in range(count)]


def stamp(iso: str) -> float:
    """Seconds since the epoch of one of the store's ISO-8601 UTC times."""
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def sweep_once(config, root: Path, target) -> tuple[float, dict[str, float]]:
    """Our sweep on the Slurm target: its wall seconds from the call, and where the time
    beyond the trials went (the trials' own timestamps, this machine's clock). Fails
    loudly unless every trial Completed as one job array."""
    from jupyter_compute.sweep import sweep
    from jupyter_compute.targets.slurm.launcher import job_record

    t0, wall0 = time.perf_counter(), time.time()
    s = sweep("trial.py", config, target=NAME, workspace=root)
    status = s.wait(timeout=900)
    took = time.perf_counter() - t0
    trials = s.trials()
    bad = [t for t in trials if t["status"] != "Completed"]
    arrays = {(job_record(target.workspace, t["run_id"]) or {}).get("job_id", "")
              .split("_")[0] for t in trials}
    if status.value != "Completed" or bad or len(arrays) != 1:
        first = f"{bad[0]['status']}: {bad[0]['error']}" if bad else "-"
        raise SystemExit(f"sweep {status.value}, {len(arrays)} job arrays; first trial not "
                         f"Completed: {first}")
    starts = [stamp(t["started"]) for t in trials]
    ends = [stamp(t["ended"]) for t in trials]
    return took, {
        "submit -> first trial Running s": min(starts) - wall0,
        "last trial ended -> sweep ended s": wall0 + took - max(ends),
        "trial Running -> ended s": statistics.median(e - b for b, e in zip(starts, ends))}


def bare_array_once(conf: str, root: Path, trials: int, concurrency: int, wrap: str) -> float:
    """A baseline: a bare ``sbatch --array`` of ``wrap``, the sweep's shape and throttle,
    from its submit until squeue has none of its tasks left."""
    t0 = time.perf_counter()
    array = slurm(conf, "sbatch", "--parsable", "--output=/dev/null", f"--chdir={root}",
                  f"--array=0-{trials - 1}%{concurrency}", f"--wrap={wrap}").strip()
    while queued := slurm(conf, "squeue", "-h", "-r", "-j", array, "-o", "%i|%r"):
        # slurmd here sometimes fails a launch, and Slurm holds the task, or requeues it
        # to start 2 minutes later: release it and let it start now, as our launcher
        # does, or the baseline measures Slurm's retry delay
        for line in queued.splitlines():
            task, reason = line.split("|", 1)
            if "launch failed requeued held" in reason:
                slurm(conf, "scontrol", "release", task)
            elif reason != "BeginTime":
                continue
            slurm(conf, "scontrol", "update", f"jobid={task}", "StartTime=now")
            print(f"  bare array: started again task {task} ({reason})", flush=True)
        time.sleep(POLL * 5)
    return time.perf_counter() - t0


def wait_idle_nodes(target, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        nodes = target.launcher.nodes(target.host, max_age=0)
        if nodes["idle"] >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"nodes never came up: {nodes}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--procs", type=int, default=10)
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sweep-repeat", type=int, default=5,
                        help="sweeps (each with its bare array and local sweep) to take "
                             "medians of")
    parser.add_argument("--only", choices=("running", "many", "sweep"), action="append",
                        help="measure only this figure (repeatable; default: all three)")
    args = parser.parse_args()

    from jupyter_compute import api
    from jupyter_compute.runs import Run
    from jupyter_compute.sweep import SweepConfig, choice, sweep
    from jupyter_compute.targets.slurm.cluster import node_prefix
    from jupyter_compute.targets.slurm.launcher import job_record

    base = Path(tempfile.mkdtemp(prefix="jc-bench-slurm-"))
    root = base / "proj"
    (root / ".jupyter_compute").mkdir(parents=True)
    (root / "hello.py").write_text(HELLO)
    (root / "trial.py").write_text(TRIAL)
    os.chdir(root)  # the source folder of every submit, the pool's processes' too
    api.attach(NAME, "slurm", workspace=root, max_nodes=4, node_cpus=2, idle_seconds=3600)
    target = api.get_target(NAME, root)
    results: dict[str, object] = Printed()
    try:
        t0 = time.perf_counter()
        target.start()
        results["cluster start s"] = round(time.perf_counter() - t0, 2)
        conf = target.launcher.slurm_conf()
        nodes = f"{node_prefix(NAME)}-n[1-4]"
        slurm(conf, "scontrol", "update", f"nodename={nodes}", "state=power_up")
        wait_idle_nodes(target, 4)

        only = set(args.only or ("running", "many", "sweep"))
        if "running" in only:  # 1. submit → Running, ours vs bare sbatch, on idle nodes
            bare, ours = [], []
            side_by_side(conf, root)  # warm: the runtime installed, sbatch options checked
            for _ in range(args.repeat):
                time.sleep(1.0 + random.random())  # any phase of slurmctld's cycle
                b, o = side_by_side(conf, root)
                bare.append(b)
                ours.append(o)
            results["submit->RUNNING bare sbatch --wrap, median s"] = round(
                statistics.median(bare), 3)
            results["submit->Running ours, median s"] = round(statistics.median(ours), 3)
            results["overhead s (goal <= 0.3)"] = round(
                statistics.median(ours) - statistics.median(bare), 3)
            results["overhead per pair, median s"] = round(
                statistics.median(o - b for o, b in zip(ours, bare)), 3)

        if "many" in only:  # 2. 200 runs from 10 processes at once
            per = math.ceil(args.runs / args.procs)
            t0 = time.perf_counter()
            with multiprocessing.get_context("spawn").Pool(args.procs) as pool:
                ids = [i for chunk in pool.map(submit_many, [(str(root), per)] * args.procs)
                       for i in chunk]
            submitted = time.perf_counter() - t0
            jobs = {(job_record(target.workspace, i) or {}).get("job_id") for i in ids}
            recorded = [r for r in api.runs(limit=None, workspace=root) if r.id in set(ids)]
            statuses = [Run.get(i, root).wait(timeout=900).value for i in ids]
            results[f"{len(ids)} runs from {args.procs} procs: submit wall s"] = round(submitted, 2)
            results["recorded / distinct jobs / Completed"] = (
                f"{len(recorded)} / {len(jobs - {None})} / {statuses.count('Completed')}")
            results["all done wall s"] = round(time.perf_counter() - t0, 2)
            failed = [Run.get(i, root).record for i in ids if Run.get(i, root).record.status
                      != "Completed"]
            if failed:
                results["first not Completed"] = f"{failed[0].status}: {failed[0].error}"

        if "sweep" in only:  # 3. a 32-trial sweep as one job array, 8 at a time, 1 s trials
            config = SweepConfig(parameter_space={"--x": choice(*range(args.trials))},
                                 sampling="grid", primary_metric_name="score",
                                 primary_metric_goal="Maximize",
                                 max_concurrent_runs=args.concurrency,
                                 max_total_runs=args.trials)
            ideal = math.ceil(args.trials / args.concurrency) * 1.0
            results["sweep ideal s (waves x 1 s)"] = ideal
            ours: list[float] = []
            bare: list[float] = []
            bare_script: list[float] = []
            local: list[float] = []
            parts: dict[str, list[float]] = {}
            for rep in range(args.sweep_repeat):  # alternated, each at any phase of the cycle
                time.sleep(random.random())
                took, breakdown = sweep_once(config, root, target)
                ours.append(took)
                for key, value in breakdown.items():
                    parts.setdefault(key, []).append(value)
                time.sleep(random.random())
                bare.append(bare_array_once(conf, root, args.trials, args.concurrency,
                                            f"{sys.executable} -c 'import time; time.sleep(1)'"))
                time.sleep(random.random())
                bare_script.append(bare_array_once(
                    conf, root, args.trials, args.concurrency,
                    f"{sys.executable} trial.py --x $SLURM_ARRAY_TASK_ID >/dev/null"))
                t0 = time.perf_counter()  # the same sweep on this machine's local target
                status = sweep("trial.py", config, target="local", workspace=root).wait(
                    timeout=900)
                local.append(time.perf_counter() - t0)
                print(f"  rep {rep + 1}: ours {took:.2f} s, bare array {bare[-1]:.2f} s, "
                      f"bare array of trial.py {bare_script[-1]:.2f} s, local {local[-1]:.2f} s "
                      f"({status.value})", flush=True)
            results["sweep reps"] = args.sweep_repeat
            results["sweep wall s, median (min-max)"] = spread(ours)
            results["sweep / ideal, median (goal <= 1.3)"] = round(
                statistics.median(ours) / ideal, 2)
            results["bare sbatch --array of the same shape, wall s, median (min-max)"] = \
                spread(bare)
            results["bare array / ideal, median"] = round(statistics.median(bare) / ideal, 2)
            results["bare array of trial.py itself (no agent), wall s, median (min-max)"] = \
                spread(bare_script)
            results["bare array of trial.py / ideal, median"] = round(
                statistics.median(bare_script) / ideal, 2)
            results["sweep / bare array, median of pairs"] = round(
                statistics.median(o / b for o, b in zip(ours, bare)), 2)
            results["same sweep on local, wall s, median (min-max)"] = spread(local)
            for key, values in parts.items():
                results[f"sweep: {key}, median"] = round(statistics.median(values), 2)
    finally:
        target.stop()
        if not os.environ.get("JC_BENCH_KEEP"):  # keep the logs to read after a failure
            shutil.rmtree(target.launcher.cluster().folder, ignore_errors=True)
            shutil.rmtree(base, ignore_errors=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
