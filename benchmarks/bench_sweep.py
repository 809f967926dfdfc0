"""Sweeps: early termination, Bayesian against random, scheduling, decision costs.

Prints four tables, each against a baseline measured in the same session:

1. Early termination on synthetic learning curves of known final quality: the
   trial-steps each policy saves against NoTerminationPolicy, and whether the best
   trial survived. Simulated (10 seeds, 40 trials, 4 at a time, the policy asked
   after every step exactly as the controller asks it) and for real on the local
   target (one seed, 12 trials, 2 at a time).
2. Bayesian against random: trials until a value within 1% of Branin's minimum,
   median over 10 seeds; Optuna's TPE called directly is the anchor.
3. Scheduling: 32 trials of a 1-second script, 8 at a time, on the local target,
   against the ideal 4 s and against 32 plain submits kept 8 at a time by a loop.
4. What the controller and the widget pay per decision: policy time on large
   histories, SweepWidget update time with many trials.

    python benchmarks/bench_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from jupyter_compute.sweep import (
    AshaPolicy,
    BanditPolicy,
    MedianStoppingPolicy,
    NoTerminationPolicy,
    SweepConfig,
    TruncationSelectionPolicy,
    loguniform,
    uniform,
)
from jupyter_compute.sweep.policies import Policy
from jupyter_compute.sweep.sampling import make_sampler

POLICIES: list[Policy] = [
    NoTerminationPolicy(),
    # Judged from a third of the way in, slow starters get a chance.
    BanditPolicy(slack_factor=0.2, evaluation_interval=1, delay_evaluation=10),
    # HyperDrive's documented conservative choice.
    MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=5),
    TruncationSelectionPolicy(truncation_percentage=25, evaluation_interval=1,
                              delay_evaluation=10),
    AshaPolicy(reduction_factor=3, min_interval=5),
    # Aggressive, to show the trade-off: more saved, the best trial at risk.
    BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=5),
]

# -- 1. early termination ---------------------------------------------------------------

#: The learning curve a trial with (lr, tau) follows: rises to a quality set by lr
#: with speed 1/tau (tau from 2 to 6 steps: curves cross, a slow starter may end
#: best), plus small noise. The script below
#: computes the same curve, so its final quality is known before it runs.
CURVE = """
import argparse, math, random, time
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
p.add_argument("--tau", type=float)
p.add_argument("--steps", type=int, default=30)
p.add_argument("--sleep", type=float, default=0.0)
a = p.parse_args()
run = get_run()
for step, value in enumerate(curve(a.lr, a.tau, a.steps)):
    run.log("accuracy", value, step=step)
    time.sleep(a.sleep)
"""


def curve(lr: float, tau: float, steps: int) -> list[float]:
    final = 0.95 - 0.08 * (math.log(lr) + 3.5) ** 2
    rng = random.Random(f"{lr:.12g}/{tau:.12g}")
    return [final * (1 - math.exp(-(t + 1) / tau)) + rng.gauss(0, 0.005) for t in range(steps)]


def curve_source() -> str:
    import inspect

    return "import math, random\n" + inspect.getsource(curve) + CURVE


def draw_trials(seed: int, n: int) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [(math.exp(rng.uniform(-6, -1)), rng.uniform(2, 6)) for _ in range(n)]


def simulate(policy: Policy, trials: list[tuple[float, float]], steps: int,
             concurrency: int) -> tuple[int, bool, float]:
    """Run the sweep loop on virtual time.

    Returns the trial-steps spent, whether the best trial (by final quality) ran to
    its end, and how far the final quality of the trial the sweep names best (by its
    last logged value, as the controller does) falls short of the best one's.
    """
    curves = [curve(lr, tau, steps) for lr, tau in trials]
    best = max(range(len(trials)), key=lambda i: curves[i][-1])
    histories: dict[int, list[float]] = {}
    waiting, running, stopped = list(range(len(trials))), set(), set()
    spent = 0
    while waiting or running:
        while waiting and len(running) < concurrency:
            i = waiting.pop(0)
            running.add(i)
            histories[i] = []
        for i in list(running):  # every running trial logs its next value
            histories[i].append(curves[i][len(histories[i])])
            spent += 1
            if len(histories[i]) == steps:
                running.discard(i)
        for stop in policy.stops(histories, running):
            running.discard(stop.trial)
            stopped.add(stop.trial)
    named = max(histories, key=lambda i: histories[i][-1])
    return spent, best not in stopped, curves[best][-1] - curves[named][-1]


def early_termination(seeds: int, real: bool) -> None:
    steps, n, concurrency = 30, 40, 4
    print(f"\n1. Early termination: {n} trials x {steps} steps, {concurrency} at a time, "
          f"{seeds} seeds (simulated); medians")
    print(f"{'policy':<72} {'trial-steps':>11} {'saved':>6} {'best kept':>10} "
          f"{'worst miss':>11}")
    for policy in POLICIES:
        spent, kept, gaps = [], 0, []
        for seed in range(seeds):
            s, k, gap = simulate(policy, draw_trials(seed, n), steps, concurrency)
            spent.append(s)
            kept += k
            gaps.append(gap)
        med = statistics.median(spent)
        print(f"{_short(policy):<72} {med:>11.0f} {1 - med / (n * steps):>6.0%} "
              f"{kept:>6}/{seeds} {max(gaps):>11.4f}")
    print("   (worst miss: over the seeds, the final quality of the best trial minus that "
          "of the trial the sweep names best)")
    if real:
        early_termination_real()


def _short(policy: Policy) -> str:
    return policy.describe().replace("evaluation_interval=1, ", "").replace(
        ", exclude_finished_jobs=False", "")


def early_termination_real() -> None:
    from jupyter_compute.sweep import sweep

    n, steps = 12, 20
    folder = project()
    (folder / "curve.py").write_text(curve_source())
    print(f"\n   for real on the local target: {n} trials x {steps} steps of 0.03 s, "
          "2 at a time")
    print(f"{'policy':<72} {'trial-steps':>11} {'saved':>6} {'best kept':>10} {'wall':>10}")
    for policy in POLICIES:
        config = SweepConfig(
            parameter_space={"--lr": loguniform(-6, -1), "--tau": uniform(1.5, 8)},
            policy=policy, primary_metric_name="accuracy", primary_metric_goal="maximize",
            max_total_runs=n, max_concurrent_runs=2)
        # The same (lr, tau) pairs for every policy: a seeded sampler gives them.
        t0 = time.perf_counter()
        s = sweep("curve.py", config, seed=0, source_dir=folder, workspace=folder,
                  arguments=["--steps", str(steps), "--sleep", "0.03"], wait=True)
        wall = time.perf_counter() - t0
        trials_done = s.trials()
        spent = sum(t["intervals"] for t in trials_done)
        true = {(t["params"]["--lr"], t["params"]["--tau"]): t for t in trials_done}
        best_key = max(true, key=lambda k: curve(*k, steps)[-1])
        kept = true[best_key]["status"] == "Completed"
        print(f"{_short(policy):<72} {spent:>11} {1 - spent / (n * steps):>6.0%} "
              f"{'yes' if kept else 'no':>10} {wall:>9.1f}s")


# -- 2. Bayesian against random ---------------------------------------------------------

BRANIN_MIN = 0.397887


def branin(x: float, y: float) -> float:
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (y - b * x * x + c * x - 6) ** 2 + 10 * (1 - t) * math.cos(x) + 10


def trials_to_optimum(ask_tell: object, cap: int) -> int:
    for n in range(1, cap + 1):
        x, y = ask_tell.ask(n)  # type: ignore[attr-defined]
        value = branin(x, y)
        ask_tell.tell(n, value)  # type: ignore[attr-defined]
        if value <= BRANIN_MIN * 1.01:
            return n
    return cap + 1


class Ours:
    """Our sampler, as the controller drives it (propose, then report)."""

    def __init__(self, sampling: str, seed: int) -> None:
        config = SweepConfig(parameter_space={"x": uniform(-5, 10), "y": uniform(0, 15)},
                             sampling=sampling, primary_metric_name="branin",
                             primary_metric_goal="minimize", max_total_runs=10_000,
                             max_concurrent_runs=1)
        self.sampler = make_sampler(config, seed)

    def ask(self, n: int) -> tuple[float, float]:
        p = self.sampler.propose(n)
        assert p is not None
        return p["x"], p["y"]

    def tell(self, n: int, value: float) -> None:
        self.sampler.report(n, [value], "completed")


class OptunaDirect:
    """The anchor: Optuna's TPE with its defaults, the seed, nothing of ours."""

    def __init__(self, seed: int) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        self.trial = None

    def ask(self, n: int) -> tuple[float, float]:
        self.trial = self.study.ask()
        return (self.trial.suggest_float("x", -5, 10),  # type: ignore[union-attr]
                self.trial.suggest_float("y", 0, 15))  # type: ignore[union-attr]

    def tell(self, n: int, value: float) -> None:
        self.study.tell(self.trial, value)


def bayesian_vs_random(seeds: int, cap_random: int, cap_tpe: int) -> None:
    print(f"\n2. Trials until within 1% of Branin's minimum ({BRANIN_MIN}), {seeds} seeds")
    print(f"{'sampler':<34} {'median':>8} {'min':>6} {'max':>6} {'capped':>7} {'time':>7}")
    rows = [("random (seeded)", lambda s: Ours("random", s), cap_random),
            ("bayesian (ours: Optuna TPE)", lambda s: Ours("bayesian", s), cap_tpe),
            ("Optuna TPESampler directly", OptunaDirect, cap_tpe)]
    for name, make, cap in rows:
        t0 = time.perf_counter()
        counts = [trials_to_optimum(make(seed), cap) for seed in range(seeds)]
        med = statistics.median(counts)
        capped = sum(c > cap for c in counts)
        shown = f">{cap}" if med > cap else f"{med:.0f}"
        print(f"{name:<34} {shown:>8} {min(counts):>6} {max(counts):>6} {capped:>7} "
              f"{time.perf_counter() - t0:>6.1f}s")


# -- 3. scheduling ----------------------------------------------------------------------


def project() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    (folder / ".jupyter_compute").mkdir()
    return folder


def scheduling(n: int = 32, concurrency: int = 8, seconds: float = 1.0) -> None:
    from jupyter_compute import api
    from jupyter_compute.sweep import sweep

    folder = project()
    (folder / "one.py").write_text(
        f"import time\nfrom jupyter_compute.tracking import get_run\ntime.sleep({seconds})\n"
        "get_run().log('m', 1.0)\n")
    ideal = n / concurrency * seconds
    print(f"\n3. Scheduling: {n} trials of a {seconds:g}-second script, {concurrency} at a "
          f"time, local target (ideal {ideal:.1f} s)")
    print(f"{'':<40} {'wall':>7} {'vs ideal':>9} {'per trial':>10}")

    # Baseline: plain submits, kept `concurrency` at a time by a polling loop.
    sweep("one.py", SweepConfig(parameter_space={"--x": uniform(0, 1)},
                                primary_metric_name="m", max_total_runs=2),
          source_dir=folder, workspace=folder, wait=True)  # warm caches and imports
    t0 = time.perf_counter()
    running: list = []
    started = 0
    while started < n or running:
        running = [r for r in running if not r.status().is_terminal()]
        while started < n and len(running) < concurrency:
            running.append(api.submit("one.py", source_dir=folder, workspace=folder,
                                      arguments=["--x", "0.5"]))
            started += 1
        time.sleep(0.01)
    plain = time.perf_counter() - t0
    print(f"{'plain submits, 8 at a time (a loop)':<40} {plain:>6.2f}s {plain / ideal:>8.2f}x "
          f"{(plain - ideal) / n * 1000:>8.0f}ms")
    config = SweepConfig(parameter_space={"--x": uniform(0, 1)}, primary_metric_name="m",
                         max_total_runs=n, max_concurrent_runs=concurrency)
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        s = sweep("one.py", config, source_dir=folder, workspace=folder, wait=True)
        walls.append(time.perf_counter() - t0)
        assert s.status().value == "Completed" and len(s.trials()) == n
    wall = statistics.median(walls)
    print(f"{'sweep (median of 3)':<40} {wall:>6.2f}s {wall / ideal:>8.2f}x "
          f"{(wall - ideal) / n * 1000:>8.0f}ms")
    print(f"{'sweep overhead per trial vs plain':<40} {'':>7} {'':>9} "
          f"{(wall - plain) / n * 1000:>8.0f}ms")


# -- 4. decision and display costs ------------------------------------------------------


def decision_costs() -> None:
    print("\n4. Policy decision time (one call; 8 running trials), median of 5")
    shapes = [(100, 100), (100, 1000), (1000, 100)]
    print(f"{'policy':<28}" + "".join(f"{f'{t} x {i}':>14}" for t, i in shapes))
    rng = random.Random(0)
    data = {shape: {t: [rng.random() for _ in range(shape[1] - rng.randrange(10))]
                    for t in range(shape[0])} for shape in shapes}
    for policy in POLICIES[1:]:
        cells = []
        for shape in shapes:
            histories = data[shape]
            running = set(range(8))
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                policy.stops(histories, running)
                times.append(time.perf_counter() - t0)
            cells.append(f"{statistics.median(times) * 1000:>12.2f}ms")
        print(f"{policy.type_name:<28}" + "".join(cells))
    print("   (trials x intervals; the controller asks only when new values arrived)")


def widget_costs() -> None:
    try:
        from jupyter_compute.widgets.sweep import SweepWidget
    except ImportError:
        return
    from jupyter_compute.summary import SweepSummary
    from jupyter_compute.widgets.charts import plotly_ready

    while not plotly_ready():  # the widget draws once plotly is loaded (its own thread)
        time.sleep(0.05)
    print("\n   SweepWidget update (table, curves, best so far, parallel coordinates) and "
          "the static summary")
    print(f"{'trials':<10} {'first update':>13} {'next update':>12} {'summary':>9}")

    class Fake:
        def __init__(self, state: dict) -> None:
            self._state = state
            self.id = "bench"

        def state(self) -> dict:
            return self._state

    for n in (10, 150, 500):
        trials = [{"index": i, "run_id": f"r{i}", "params": {"--lr": i / n, "--opt": "adam"},
                   "arguments": ["--lr", str(i / n)], "status": "Completed", "metric": i / n,
                   "intervals": 40, "stop_reason": None, "error": None, "started": "",
                   "ended": f"{i:06d}"} for i in range(1, n + 1)]
        state = {"id": "bench", "name": "bench", "status": "Running", "target": "local",
                 "primary_metric": {"name": "acc", "goal": "Maximize"},
                 "parameters": ["--lr", "--opt"], "trials": trials, "best": trials[-1],
                 "max_total_runs": n, "warnings": []}
        points = [{"trial": t, "interval": i, "value": i / 40} for t in range(1, n + 1)
                  for i in range(1, 41)]
        # A widget without a follower or a kernel: what _apply costs on its own.
        widget = _bare_widget(SweepWidget, Fake(state))
        t0 = time.perf_counter()
        widget._apply(state, points)
        first = time.perf_counter() - t0
        trials[0] = dict(trials[0], status="Canceled")
        state = dict(state, trials=list(trials))
        t0 = time.perf_counter()
        widget._apply(state, [{"trial": n, "interval": 41, "value": 1.0}])
        nxt = time.perf_counter() - t0
        t0 = time.perf_counter()
        SweepSummary(state).bundle()
        summary = time.perf_counter() - t0
        print(f"{n:<10} {first * 1000:>11.1f}ms {nxt * 1000:>10.1f}ms {summary * 1000:>7.1f}ms")


def _bare_widget(cls: type, fake: object) -> object:
    """A SweepWidget on a stand-in sweep, with no follower thread."""
    class _Run:
        record = None
        workspace = None

    fake.run = _Run()  # type: ignore[attr-defined]
    fake.folder = Path(os.devnull)  # type: ignore[attr-defined]
    widget = cls.__new__(cls)
    import ipywidgets as widgets

    from jupyter_compute.widgets.sweep import TrialTable

    widget.sweep, widget.interval, widget.display_handle = fake, 0.25, None
    widget.state = {}
    widget._curves, widget._parcoords_at, widget._parcoords_key = {}, 0.0, None
    widget._figures, widget._done, widget.updates, widget._drawn = {}, False, 0, {}
    widget._charts_due = False
    widget.header, widget.warning_box = widgets.HTML(), widgets.HTML()
    widget.cancel_button, widget.table = widgets.Button(), TrialTable()
    from jupyter_compute.widgets.charts import ChartGrid

    widget.charts, widget.detail = ChartGrid(time_axis=False), widgets.VBox()
    widgets.VBox.__init__(widget, [widget.header, widget.table, widget.charts])
    return widget


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds, no real runs")
    args = parser.parse_args()
    seeds = 3 if args.quick else 10
    early_termination(seeds, real=not args.quick)
    bayesian_vs_random(seeds, cap_random=3000, cap_tpe=400)
    if not args.quick:
        scheduling()
    decision_costs()
    widget_costs()


if __name__ == "__main__":
    main()
