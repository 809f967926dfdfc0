"""What does a notebook run cost over running papermill by hand?

Times one tiny parameterized notebook, in the same session, and prints medians:
  papermill CLI        papermill in.ipynb out.ipynb -p alpha 0.5        (the baseline)
  execute_notebook     papermill.execute_notebook(...) in this warm process
  our runner           python -m jupyter_compute.notebook_runner nb.ipynb --parameters …
  submit --wait        jupyter-compute submit nb.ipynb -p alpha 0.5 --wait  (local target)
then a notebook of many quick cells (papermill re-saves the whole notebook twice per
cell; the runner at most once a second), and, apart, what importing papermill costs
a fresh interpreter, as papermill's CLI pays it and as the runner pays it (with
jsonschema's unused rfc3987_syntax blocked).

    python benchmarks/bench_notebook.py [--repeat 5] [--cells 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from timing import timed

BIN = Path(sys.executable).parent
CLI, PAPERMILL = str(BIN / "jupyter-compute"), str(BIN / "papermill")




def run(*argv: str, env: dict[str, str] | None = None) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env)


def write_notebook(path: Path, quick_cells: int = 1) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("alpha = 0.1", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(f"print(alpha * {i})") for i in range(quick_cells)]
    nbformat.write(nb, path)


def table(title: str, results: dict[str, list[float]]) -> None:
    base = statistics.median(next(iter(results.values())))
    print(f"{title:<26} {'median':>9} {'p90':>9} {'vs papermill CLI':>17} {'ratio':>6}")
    for name, times in results.items():
        med = statistics.median(times)
        p90 = sorted(times)[int(0.9 * (len(times) - 1))]
        print(f"{name:<26} {med * 1000:8.0f}ms {p90 * 1000:8.0f}ms "
              f"{(med - base) * 1000:+16.0f}ms {med / base:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cells", type=int, default=200, help="cells of the long notebook")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-notebook-"))
    (folder / ".jupyter_compute").mkdir()
    os.chdir(folder)
    write_notebook(folder / "nb.ipynb")
    write_notebook(folder / "many.ipynb", args.cells)
    (folder / "params.json").write_text(json.dumps({"alpha": 0.5}))
    # The runner outside a run writes outputs/ here; keep it out of the snapshot.
    (folder / ".gitignore").write_text("out.ipynb\nparams.json\n")

    py = sys.executable
    imports = {
        "python -c pass": timed(lambda: run(py, "-c", "pass"), args.repeat),
        "import papermill": timed(lambda: run(py, "-c", "import papermill"), args.repeat),
        "import papermill (runner)": timed(lambda: run(
            py, "-c", "import sys; sys.modules['rfc3987_syntax'] = None; import papermill"),
            args.repeat),
    }

    import papermill

    # In-process kernels inherit this process's stderr: keep their warnings off the table.
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved_stderr = os.dup(2)
    os.dup2(devnull, 2)
    results = {
        "papermill CLI": timed(lambda: run(PAPERMILL, "nb.ipynb", "out.ipynb",
                                           "-p", "alpha", "0.5"), args.repeat),
        "execute_notebook (warm)": timed(lambda: papermill.execute_notebook(
            "nb.ipynb", "out.ipynb", parameters={"alpha": 0.5}, progress_bar=False),
            args.repeat),
        "our runner": timed(lambda: run(py, "-u", "-m", "jupyter_compute.notebook_runner",
                                        "nb.ipynb", "--parameters", "params.json"),
                            args.repeat),
        "submit --wait": timed(lambda: run(CLI, "submit", "nb.ipynb", "-p", "alpha", "0.5",
                                           "--wait"), args.repeat),
    }
    many_repeat = max(1, args.repeat // 2)
    many = {
        "papermill CLI": timed(lambda: run(PAPERMILL, "many.ipynb", "out.ipynb",
                                           "-p", "alpha", "0.5"), many_repeat),
        "submit --wait": timed(lambda: run(CLI, "submit", "many.ipynb", "-p", "alpha", "0.5",
                                           "--wait"), many_repeat),
    }
    os.dup2(saved_stderr, 2)

    base = statistics.median(imports["python -c pass"])
    print(f"{'import cost':<26} {'median':>9} {'over python':>12}   ({args.repeat} runs)")
    for name, times in imports.items():
        med = statistics.median(times)
        print(f"{name:<26} {med * 1000:8.0f}ms {(med - base) * 1000:+11.0f}ms")
    print()
    table("2-cell notebook", results)
    print()
    table(f"{args.cells + 1}-cell notebook", many)
    warm = statistics.median(results["execute_notebook (warm)"])
    ours = statistics.median(results["submit --wait"])
    print(f"\nsubmit --wait over a warm execute_notebook: {(ours - warm) * 1000:+.0f}ms "
          "(interpreter start, papermill import, snapshot, agent)")


if __name__ == "__main__":
    main()
