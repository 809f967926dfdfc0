"""Does the RunWidget keep up without getting in the kernel's way?

In a real IPython kernel (jupyter_client), on the local target:
  1. print → widget latency: a run prints a timestamp every 50 ms; the widget's
     model records when each line reaches it. p50 / p95.
  2. a flood: a run prints 1,000,000 lines as fast as it can while the widget
     follows it; meanwhile `1+1` is executed over and over (round-trip time), and
     the kernel's memory is read from /proc (growth of peak RSS over the start).

    python benchmarks/bench_widget.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from kernel import Kernel  # noqa: E402

LATENCY_SCRIPT = """
import time
for i in range(200):
    print(f"t {time.time():.6f}", flush=True)
    time.sleep(0.05)
"""

FLOOD_SCRIPT = """
import sys
write = sys.stdout.write
for i in range({lines}):
    write(f"flood line {{i}} " + "x" * 40 + "\\n")
"""

PROBE = """
import time
from jupyter_compute.widgets.run import RunWidget
_seen = []
class Probe(RunWidget):
    def _apply(self, batch):
        now = time.time()
        super()._apply(batch)
        _seen.extend((now, line) for line in batch.lines)
"""


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-widget-"))
    (folder / ".jupyter_compute").mkdir()
    (folder / "latency.py").write_text(LATENCY_SCRIPT)
    (folder / "flood.py").write_text(FLOOD_SCRIPT.format(lines=args.lines))
    k = Kernel(folder)
    try:
        k.run("%load_ext jupyter_compute")
        k.run(PROBE)
        # 1. latency
        k.run("from jupyter_compute import submit\nr = submit('latency.py')\n"
              "w = Probe(r)\nw.follower.join(60)")
        seen = json.loads(k.value("__import__('json').dumps(_seen)"))
        lat = [(got - float(line.split()[1])) * 1000 for got, line in seen
               if line.startswith("t ")]
        print(f"print → widget model latency over {len(lat)} lines: "
              f"p50 {pct(lat, 0.5):.0f} ms, p95 {pct(lat, 0.95):.0f} ms, max {max(lat):.0f} ms")

        # 2. flood
        pid = int(k.value("__import__('os').getpid()"))
        status = Path(f"/proc/{pid}/status")

        def rss(field: str) -> int:
            for line in status.read_text().splitlines():
                if line.startswith(field):
                    return int(line.split()[1]) // 1024
            return 0

        base_rss = rss("VmRSS:")
        k.run("_seen.clear()\nr = submit('flood.py')\nw = Probe(r, tail_lines=500)")
        t0 = time.monotonic()
        rtts = []
        while k.value("w.follower.alive") == "True":
            t = time.monotonic()
            out = k.run("1+1")
            assert out.data[-1]["text/plain"] == "2"
            rtts.append((time.monotonic() - t) * 1000)
            time.sleep(0.05)
        flood_s = time.monotonic() - t0
        peak = rss("VmHWM:")
        shown = k.value("len(w.log_text.splitlines()), w.log_text.split()[2]")
        print(f"flood of {args.lines:,} lines ({flood_s:.1f} s to follow to the end): "
              f"`1+1` round trip p50 {statistics.median(rtts):.0f} ms, "
              f"p95 {pct(rtts, 0.95):.0f} ms, max {max(rtts):.0f} ms over {len(rtts)} cells")
        print(f"kernel memory: {base_rss} MB before, peak {peak} MB "
              f"(growth ≤ {peak - base_rss} MB); widget shows {shown}")
    finally:
        k.shutdown()


if __name__ == "__main__":
    main()
