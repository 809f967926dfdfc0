"""How much does a run cost over running the script by hand?

Times a trivial script three ways, in the same session, and prints medians:
  bare python      python hello.py
  CLI              jupyter-compute submit hello.py --wait
  Python API       submit("hello.py") + run.wait(), in one warm process

    python benchmarks/bench_submit.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import timed

CLI = str(Path(sys.executable).with_name("jupyter-compute"))




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    (folder / "hello.py").write_text("print('hello')\n")
    (folder / ".jupyter_compute").mkdir()
    os.chdir(folder)

    def bare() -> None:
        subprocess.run([sys.executable, "hello.py"], check=True, stdout=subprocess.DEVNULL)

    def cli() -> None:
        subprocess.run([CLI, "submit", "hello.py", "--wait"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    from jupyter_compute import RunStatus, submit

    def api() -> None:
        assert submit("hello.py").wait() is RunStatus.COMPLETED

    results = {"bare python": timed(bare, args.repeat),
               "CLI submit --wait": timed(cli, args.repeat),
               "API submit + wait": timed(api, args.repeat)}
    base = statistics.median(results["bare python"])
    print(f"{'':<20} {'median':>9} {'p90':>9} {'overhead':>9} {'ratio':>6}   ({args.repeat} runs)")
    for name, times in results.items():
        med = statistics.median(times)
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"{name:<20} {med * 1000:8.1f}ms {p90 * 1000:8.1f}ms "
              f"{(med - base) * 1000:+8.1f}ms {med / base:5.2f}x")


if __name__ == "__main__":
    main()
