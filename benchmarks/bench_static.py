"""What making a display static costs: drawing a run's summary, and a kernel's shutdown.

  1. ``Run.summary()`` of an ended local run with a long log (1,000,000 lines) and
     3 metrics × 10,000 points, against its baseline, reading the log alone
     (``run.log()``); and with the tail a widget already holds (``log_tail=``), which
     is what a live view's end uses. The HTML's size (three SVG charts) is printed.
  2. A kernel's shutdown, ``shutdown_request`` → ``shutdown_reply`` on IOPub, with
     live run views (their runs still going) against the same kernel with none.

    python benchmarks/bench_static.py [--lines 1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from timing import timed  # noqa: E402

from kernel import Kernel  # noqa: E402

LONG = """
import sys
from jupyter_compute.tracking import get_run
run = get_run()
write = sys.stdout.write
for i in range({lines}):
    write(f"line {{i}} " + "x" * 40 + "\\n")
for step in range(10000):
    for name in ("loss", "accuracy", "lr"):
        run.log(name, 1 / (step + 1), step=step)
"""

SLOW = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"


def shutdown_seconds(folder: Path, views: int) -> float:
    """Seconds from the shutdown request to the reply on IOPub, with ``views`` live."""
    k = Kernel(folder)
    try:
        k.run("%load_ext jupyter_compute")
        for _ in range(views):
            assert k.run("%submit slow.py").status == "ok"
        time.sleep(1)
        quiet = time.monotonic() + 0.5
        while time.monotonic() < quiet:
            try:
                k.kc.get_iopub_msg(timeout=0.05)
            except queue.Empty:
                pass
        t0 = time.perf_counter()
        k.kc.shutdown()
        updates = 0
        while True:
            msg = k.kc.get_iopub_msg(timeout=10)
            updates += msg["msg_type"] == "update_display_data"
            if msg["msg_type"] == "shutdown_reply":
                elapsed = time.perf_counter() - t0
                break
        assert updates == views, f"{updates} of {views} outputs were made static"
        k.km.finish_shutdown()
        return elapsed
    finally:
        k.kc.stop_channels()
        if k.km.is_alive():
            k.km.shutdown_kernel(now=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-static-"))
    (folder / ".jupyter_compute").mkdir()
    (folder / "long.py").write_text(LONG.format(lines=args.lines))
    (folder / "slow.py").write_text(SLOW)

    from jupyter_compute import api

    run = api.submit("long.py", workspace=folder, source_dir=str(folder))
    assert run.wait().value == "Completed"
    tail = run.log().splitlines()[-500:]
    base = statistics.median(timed(run.log, args.repeat))
    full = statistics.median(timed(run.summary, args.repeat))
    held = statistics.median(timed(lambda: run.summary(log_tail=tail), args.repeat))
    size = len(run.summary(log_tail=tail).html())
    print(f"run of {args.lines:,} log lines, 3 metrics x 10,000 points (median of "
          f"{args.repeat}):")
    print(f"  read the log alone (baseline)      {base * 1000:8.1f} ms")
    print(f"  Run.summary(), reading the log     {full * 1000:8.1f} ms  "
          f"({full / base:.2f}x the baseline)")
    print(f"  Run.summary(log_tail=the widget's) {held * 1000:8.1f} ms  "
          f"({held / base:.2f}x the baseline); HTML {size / 1024:.0f} KiB")

    rows = []
    for views in (0, 3):
        runs = [shutdown_seconds(folder, views) for _ in range(3)]
        rows.append((views, statistics.median(runs)))
    print("kernel shutdown, request → reply on IOPub (median of 3 kernels):")
    for views, seconds in rows:
        print(f"  {views} live run views  {seconds * 1000:7.1f} ms  "
              f"({seconds / rows[0][1]:.2f}x the baseline without)")
    from jupyter_compute.runs import Run

    for r in api.runs(workspace=folder):  # the slow runs outlive their kernels
        if not r.status().is_terminal():
            Run.get(r.id, folder).cancel()


if __name__ == "__main__":
    main()
