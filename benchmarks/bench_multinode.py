"""What does spreading a run over nodes cost on Ray, against a 1-node run?

Starts one embedded cluster with 2 worker nodes of 1 CPU kept warm (min_nodes=2) in a
scratch workspace and times, in the same session, medians of:

  1 node              submit() of a plain run → its script started (the baseline)
  2 nodes × 1         submit(node_count=2) → the last rank's script started, and the
                      start skew between the first and the last rank

A script's start is the ``time.time()`` it prints first thing; submit's clock is
read just before ``submit()`` (the same machine's clock). Only the cluster's own
processes are stopped at the end (never ``ray stop``).

    python benchmarks/bench_multinode.py [--repeat 5]
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


def starts(log: str) -> list[float]:
    """Every rank's (or the script's) start time, from its ``started T`` line."""
    return [float(line.rsplit(" ", 1)[1]) for line in log.splitlines()
            if "started " in line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from jupyter_compute import api

    folder = Path(tempfile.mkdtemp(prefix="bench-multinode-"))
    (folder / ".jupyter_compute").mkdir()
    (folder / "start.py").write_text(SCRIPT)
    os.chdir(folder)
    target = api.attach("bench", "ray", min_nodes=2, max_nodes=2, node_cpus=1,
                        idle_seconds=60)
    t0 = time.perf_counter()
    target.start()
    results: dict[str, list[tuple[float, float]]] = {"1 node (baseline)": [],
                                                     "2 nodes x 1 rank": []}
    try:
        while target.launcher.nodes(max_age=0).get("current", 0) < 2:
            time.sleep(0.5)
        print(f"cluster with 2 warm nodes in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
        for i in range(args.repeat + 1):  # the first of each is a warm-up, not counted
            for name, nodes in (("1 node (baseline)", 1), ("2 nodes x 1 rank", 2)):
                submitted = time.time()
                run = api.submit("start.py", target="bench", node_count=nodes)
                status = run.wait(timeout=300)
                found = starts(run.log())
                if status.value != "Completed" or len(found) != nodes:
                    raise SystemExit(f"{name}: {status.value}\n{run.log()}")
                if i:
                    results[name].append((max(found) - submitted, max(found) - min(found)))
    finally:
        target.stop()
        target.cluster().stop(remove_files=True)
    base = statistics.median(t for t, _ in results["1 node (baseline)"])
    print(f"{'':<20} {'submit→all started':>19} {'vs 1 node':>10} {'start skew':>11}   "
          f"(medians of {args.repeat}, warm cluster)")
    for name, pairs in results.items():
        ready = statistics.median(t for t, _ in pairs)
        skew = statistics.median(s for _, s in pairs)
        print(f"{name:<20} {ready:18.3f}s {ready - base:+9.3f}s {skew:10.3f}s")


if __name__ == "__main__":
    main()
