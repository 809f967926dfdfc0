"""Pipelines: an unchanged rerun, and the hand-off between two dependent steps.

Prints two tables, each against a baseline measured in the same session:

1. A 5-step pipeline (prep → two branches → join → report, trivial command steps
   on the local target) rerun unchanged, every step reused: wall time from
   ``submit_file`` to Completed (goal ≤ 1 s). Baselines: the same pipeline with
   ``reuse=False`` (every step runs), and one plain ``submit`` of a trivial command.
2. The hand-off between two dependent trivial local steps: from the first step's
   script ending to the second step's script starting (``ended`` → ``started`` of
   the two runs), i.e. the time beyond the steps' own run time (goal ≤ 0.3 s). It
   covers noticing the end, storing the output in the blob store, the dependent's
   snapshot with that input, and starting its agent. Baseline: a plain submit's
   own latency from ``submit`` to its script starting (what any run pays).

    python benchmarks/bench_pipeline.py [--repeat N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from jupyter_compute import submit
from jupyter_compute.pipeline import submit_file
from jupyter_compute.workspace import init

FIVE = """\
type: pipeline
jobs:
  prep:
    code: src
    command: echo rows > ${{outputs.data}}/data.txt
    outputs: {data: }
  left:
    code: src
    command: cat ${{inputs.d}}/data.txt > ${{outputs.o}}/left.txt
    inputs: {d: "${{parent.jobs.prep.outputs.data}}"}
    outputs: {o: }
  right:
    code: src
    command: cat ${{inputs.d}}/data.txt > ${{outputs.o}}/right.txt
    inputs: {d: "${{parent.jobs.prep.outputs.data}}"}
    outputs: {o: }
  join:
    code: src
    command: cat ${{inputs.l}}/left.txt ${{inputs.r}}/right.txt > ${{outputs.o}}/both.txt
    inputs: {l: "${{parent.jobs.left.outputs.o}}", r: "${{parent.jobs.right.outputs.o}}"}
    outputs: {o: }
  report:
    code: src
    command: wc -l ${{inputs.b}}/both.txt
    inputs: {b: "${{parent.jobs.join.outputs.o}}"}
"""

TWO = """\
type: pipeline
jobs:
  first:
    code: src
    command: python step.py ${{outputs.o}}
    outputs: {o: }
  second:
    code: src
    command: python step.py ${{outputs.o}} ${{inputs.i}}
    inputs: {i: "${{parent.jobs.first.outputs.o}}"}
    outputs: {o: }
"""


def seconds(a: str, b: str) -> float:
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ws = init(root)[0]
        (root / "src").mkdir()
        (root / "src" / "step.py").write_text(
            "import sys\nopen(sys.argv[1] + '/out.txt', 'w').write('x')\n")
        (root / "five.yml").write_text(FIVE)
        (root / "two.yml").write_text(TWO)

        def whole(path: str, reuse: bool) -> float:
            t0 = time.perf_counter()
            p = submit_file(root / path, reuse=reuse, workspace=ws, wait=True)
            took = time.perf_counter() - t0
            assert p.status().value == "Completed", p.log()
            return took

        def plain() -> float:
            t0 = time.perf_counter()
            run = submit(command="true", source_dir=root / "src", workspace=ws, wait=True)
            assert run.status().value == "Completed"
            return time.perf_counter() - t0

        whole("five.yml", True)  # warm: imports, page cache, the reuse index
        rerun = [whole("five.yml", True) for _ in range(args.repeat)]
        fresh = [whole("five.yml", False) for _ in range(args.repeat)]
        plains = [plain() for _ in range(args.repeat)]
        print("1. a 5-step pipeline, submit → Completed (median of", args.repeat, "runs)")
        print(f"   rerun unchanged (5 reused)       {median_ms(rerun)}   goal ≤ 1000 ms")
        print(f"   every step runs (reuse=False)    {median_ms(fresh)}")
        print(f"   one plain submit of 'true'       {median_ms(plains)}")

        gaps, starts = [], []
        for _ in range(args.repeat + 1):
            p = submit_file(root / "two.yml", reuse=False, workspace=ws, wait=True)
            first, second = (p.step_run(n).record for n in ("first", "second"))
            assert first.ended and second.started
            gaps.append(seconds(first.ended, second.started))
        for _ in range(args.repeat):
            run = submit(command="true", source_dir=root / "src", workspace=ws, wait=True)
            assert run.record.started
            starts.append(seconds(run.record.created, run.record.started))
        gaps = gaps[1:]  # the first paid for warming up
        print("2. hand-off between two dependent trivial local steps (median of",
              args.repeat, "pipelines)")
        print(f"   first ended → second started     {median_ms(gaps)}   goal ≤ 300 ms")
        print(f"   a plain submit → script started  {median_ms(starts)}   (baseline)")
        print(f"   pipeline's own share              "
              f"{median_ms([g - statistics.median(starts) for g in gaps])}")


if __name__ == "__main__":
    main()
