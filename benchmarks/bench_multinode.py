"""What does spreading a run over nodes cost, against a 1-node run on the same cluster?

For each cluster kind asked for (``--kinds ray,slurm``), starts its embedded cluster
with 2 worker nodes of 1 CPU in a scratch workspace, warms both nodes up (one 2-node
run, not counted), then times, in the same session, medians of:

  1 node              submit() of a plain run → its script started (the baseline)
  2 nodes x 1 rank    submit(node_count=2) → the last rank's script started, and the
                      start skew between the first and the last rank

A script's start is the ``time.time()`` it prints first thing; submit's clock is
read just before ``submit()`` (the same machine's clock). Only the clusters' own
processes are stopped at the end (never ``ray stop``).

    python benchmarks/bench_multinode.py [--repeat 5] [--kinds ray,slurm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = "import time; print(f'started {time.time()}', flush=True)\n"
ROWS = (("1 node (baseline)", 1), ("2 nodes x 1 rank", 2))


def starts(log: str) -> list[float]:
    """Every rank's (or the script's) start time, from its ``started T`` line."""
    return [float(line.rsplit(" ", 1)[1]) for line in log.splitlines()
            if "started " in line]


def attach(kind: str):  # -> the target, started
    from jupyter_compute import api

    if kind == "ray":  # min_nodes=2 keeps both nodes up between runs
        target = api.attach("bench-ray", "ray", min_nodes=2, max_nodes=2, node_cpus=1,
                            idle_seconds=600)
    else:  # CLOUD nodes power up with the warm-up run and stay up while idle_seconds last
        target = api.attach("bench-hpc", "slurm", max_nodes=2, node_cpus=1,
                            idle_seconds=600)
    target.start()
    return target


def measure(kind: str, repeat: int) -> dict[str, list[tuple[float, float]]]:
    import json

    from jupyter_compute import api

    t0 = time.perf_counter()
    target = attach(kind)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in ROWS}
    steps: dict[str, list[float]] = {}  # the ranks' launcher's own steps (ranks_ray)
    try:
        for i in range(repeat + 1):  # the first round warms the nodes up: not counted
            for name, nodes in ROWS:
                submitted = time.time()
                run = api.submit("start.py", target=target.name, node_count=nodes)
                status = run.wait(timeout=600)
                found = starts(run.log())
                if status.value != "Completed" or len(found) != nodes:
                    raise SystemExit(f"{kind}, {name}: {status.value}\n{run.log()}")
                if i:
                    results[name].append((max(found) - submitted, max(found) - min(found)))
                    placed = json.loads(run.target.read(run.id, "ranks.json") or b"{}")
                    for step, seconds in (placed.get("seconds") or {}).items():
                        steps.setdefault(step, []).append(seconds)
            if not i:
                print(f"{kind}: cluster started and 2 nodes warm in "
                      f"{time.perf_counter() - t0:.1f}s", file=sys.stderr)
    finally:
        target.stop()
        if kind == "ray":
            target.cluster().stop(remove_files=True)
    if steps:
        print(f"{kind}: the ranks' launcher took (medians) " + ", ".join(
            f"{step} {statistics.median(v):.2f}s" for step, v in steps.items()),
            file=sys.stderr)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--kinds", default="ray,slurm", help="clusters to measure")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-multinode-"))
    (folder / ".jupyter_compute").mkdir()
    (folder / "start.py").write_text(SCRIPT)
    os.chdir(folder)
    tables = {kind: measure(kind, args.repeat) for kind in args.kinds.split(",")}
    print(f"{'':<26} {'submit→all started':>19} {'vs 1 node':>10} {'start skew':>11}   "
          f"(medians of {args.repeat}, warm cluster)")
    for kind, results in tables.items():
        base = statistics.median(t for t, _ in results[ROWS[0][0]])
        for name, pairs in results.items():
            ready = statistics.median(t for t, _ in pairs)
            skew = statistics.median(s for _, s in pairs)
            print(f"{kind + ': ' + name:<26} {ready:18.3f}s {ready - base:+9.3f}s "
                  f"{skew:10.3f}s")


if __name__ == "__main__":
    main()
