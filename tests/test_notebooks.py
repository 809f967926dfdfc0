"""Notebooks as runs: papermill on the real local target, with real kernels.

Each notebook is built here with nbformat; every run starts a real ipykernel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbformat.notebooknode import NotebookNode

from conftest import Project
from kernel import Kernel

PYTHON3 = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(project: Project, rel: str, cells: list[str | tuple[str, str]]) -> Path:
    """A notebook of code cells; ``("md", text)`` is markdown, ``("parameters", code)``
    the code cell tagged ``parameters``."""
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": PYTHON3})
    for cell in cells:
        if isinstance(cell, str):
            nb.cells.append(nbformat.v4.new_code_cell(cell))
        elif cell[0] == "md":
            nb.cells.append(nbformat.v4.new_markdown_cell(cell[1]))
        else:
            nb.cells.append(nbformat.v4.new_code_cell(cell[1], metadata={"tags": [cell[0]]}))
    path = project.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def executed(project: Project, run_id: str, name: str) -> NotebookNode:
    return nbformat.read(project.run_dir(run_id) / "outputs" / name, as_version=4)


def text_of(cell: NotebookNode) -> str:
    out = []
    for o in cell.get("outputs", []):
        out.append(o.get("text") or o.get("data", {}).get("text/plain", "")
                   or f"{o.get('ename')}: {o.get('evalue')}")
    return "".join(out)


def records(project: Project, run_id: str) -> list[dict]:
    path = project.run_dir(run_id) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def run_id_of(out: subprocess.CompletedProcess[str]) -> str:
    """The id in the CLI's "submitted <id> to local: …" line."""
    return out.stderr.split()[1]


def wait_for_log(project: Project, run_id: str, text: str, timeout: float = 60) -> None:
    log = project.run_dir(run_id) / "output.log"
    deadline = time.monotonic() + timeout
    while not (log.exists() and text in log.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never appeared in the log"
        time.sleep(0.05)


def run_processes(run_id: str) -> list[int]:
    """Live processes carrying this run's id (the runner, its kernel, …)."""
    marker = f"JUPYTER_COMPUTE_RUN_ID={run_id}\0".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


ANALYSIS = [
    ("md", "# Analysis"),
    ("parameters", "alpha = 0.1\nname = 'x'\ncount = 1\nflag = False"),
    "import json\n"
    "from jupyter_compute.tracking import get_run\n"
    "run = get_run()\n"
    "for i in range(count):\n"
    "    run.log('score', alpha * (i + 1), step=i)\n"
    "with open('outputs/result.json', 'w') as f:\n"
    "    json.dump({'alpha': alpha, 'name': name, 'count': count, 'flag': flag}, f)\n"
    "print(f'alpha={alpha} name={name!r} count={count} flag={flag}')",
    "alpha * 10",
]


def test_cli_parameters_typed_raw_and_file(project: Project) -> None:
    write_notebook(project, "analysis.ipynb", ANALYSIS)
    project.write("params.yml", "count: 3\nflag: true\nname: from-file\n")
    out = project.cli("submit", "analysis.ipynb", "-p", "alpha", "0.5", "-r", "name", "7",
                      "-f", "params.yml", "--wait")
    assert out.returncode == 0, out.stderr + out.stdout
    run_id = run_id_of(out)

    # The log streamed cell progress and the cells' outputs as they ran.
    assert "[notebook] cell 3/5: # Parameters" in out.stdout
    assert "[notebook] cell 4/5: import json" in out.stdout
    assert "alpha=0.5 name='7' count=3 flag=True" in out.stdout
    assert "\n5.0\n" in out.stdout

    # -p typed, -r raw, -f from YAML (overridden by -r), as papermill would pass them.
    result = json.loads((project.run_dir(run_id) / "outputs" / "result.json").read_text())
    assert result == {"alpha": 0.5, "name": "7", "count": 3, "flag": True}

    nb = executed(project, run_id, "analysis.ipynb")
    assert [c.metadata.get("tags") for c in nb.cells[1:3]] == [["parameters"],
                                                               ["injected-parameters"]]
    assert "alpha = 0.5" in nb.cells[2].source and 'name = "7"' in nb.cells[2].source
    assert "alpha=0.5 name='7' count=3 flag=True" in text_of(nb.cells[3])
    assert text_of(nb.cells[4]) == "5.0"
    assert nb.metadata.papermill["parameters"] == result

    # The tracking API worked inside the kernel; progress was recorded per code cell.
    recs = records(project, run_id)
    assert [r["value"] for r in recs if r["name"] == "score"] == [0.5, 1.0, 1.5]
    progress = [r for r in recs if r["kind"] == "progress"]
    assert [(r["name"], r["step"], r["value"]) for r in progress] == [
        ("progress", 2, {"cell": 2, "of": 5, "source": "alpha = 0.1"}),
        ("progress", 3, {"cell": 3, "of": 5, "source": "# Parameters"}),
        ("progress", 4, {"cell": 4, "of": 5, "source": "import json"}),
        ("progress", 5, {"cell": 5, "of": 5, "source": "alpha * 10"}),
    ]


def test_api_submit_runs_the_notebook(project: Project) -> None:
    from jupyter_compute import api

    # In a subfolder: the kernel runs there (as in Jupyter), and its outputs/ still
    # reaches the run's outputs.
    write_notebook(project, "nbs/analysis.ipynb", ANALYSIS)
    run = api.submit("nbs/analysis.ipynb", parameters={"alpha": 2, "name": "api"}, wait=True)
    assert run.status().value == "Completed", run.record.error
    assert run.record.kind == "notebook"
    names = {p.name for p in run.outputs()}
    assert {"analysis.ipynb", "result.json"} <= names
    nb = executed(project, run.id, "analysis.ipynb")
    assert text_of(nb.cells[4]) == "20"


def test_submit_magic_with_parameters(project: Project, kernel: Kernel) -> None:
    write_notebook(project, "analysis.ipynb", ANALYSIS)
    out = kernel.run("%submit analysis.ipynb -p alpha 0.5 -p count 2 -o r")
    assert out.status == "ok", out.error_text
    assert any("application/vnd.jupyter.widget-view+json" in d for d in out.data)
    assert kernel.value("r.wait()") == "Completed"
    run_id = kernel.value("r.id")
    nb = executed(project, run_id, "analysis.ipynb")
    assert "alpha = 0.5" in nb.cells[2].source
    assert "alpha=0.5 name='x' count=2 flag=False" in text_of(nb.cells[3])
    assert kernel.value("[r['value'] for r in r.metrics()['score']]") == "[0.5, 1.0]"


def test_failing_cell_names_its_index_and_exception(project: Project) -> None:
    write_notebook(project, "fails.ipynb", [
        "print('first cell ran')",
        "x = 2",
        "raise ValueError(f'boom at three, x={x}')",
        "print('never printed')",
    ])
    out = project.cli("submit", "fails.ipynb", "--wait")
    assert out.returncode == 1
    run_id = run_id_of(out)
    shown = project.show(run_id)
    assert shown["status"] == "Failed"
    assert shown["error"] == "cell 3/4 (index 2, In [3]) failed: ValueError: boom at three, x=2"
    log = (project.run_dir(run_id) / "output.log").read_text()
    assert "Traceback" in log and "never printed" not in log

    nb = executed(project, run_id, "fails.ipynb")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert text_of(code[0]) == "first cell ran\n"
    assert [c.metadata.papermill["status"] for c in code] == [
        "completed", "completed", "failed", "pending"]
    assert text_of(code[2]) == "ValueError: boom at three, x=2"


def test_kernel_death_fails_the_run_and_keeps_the_cells_before(project: Project) -> None:
    write_notebook(project, "dies.ipynb", ["print('before')", "import os; os._exit(3)",
                                           "print('after')"])
    out = project.cli("submit", "dies.ipynb", "--wait")
    assert out.returncode == 1
    run_id = run_id_of(out)
    assert project.show(run_id)["error"] == ("the kernel died during cell 2/3 (out of memory, "
                                             "killed, or the code exited the process)")
    nb = executed(project, run_id, "dies.ipynb")
    assert "DeadKernelError" in nb.cells[0].source
    assert [c.metadata.papermill["status"] for c in nb.cells[1:]] == [
        "completed", "failed", "pending"]
    assert text_of(nb.cells[1]) == "before\n"


LONG = [f"import time\nprint('cell {i} done', flush=True)\ntime.sleep(0.5)" for i in range(12)]


def test_cancel_keeps_the_cells_that_ran(project: Project) -> None:
    write_notebook(project, "long.ipynb", LONG)
    run_id = project.submit("long.ipynb")
    wait_for_log(project, run_id, "[notebook] cell 5/12")
    out = project.cli("cancel", run_id)
    assert out.returncode == 0, out.stderr
    assert project.show(run_id)["status"] == "Canceled"

    nb = executed(project, run_id, "long.ipynb")
    assert "stopped (SIGTERM" in nb.cells[0].source  # a banner says where it stopped
    code = [c for c in nb.cells if c.cell_type == "code"]
    statuses = [c.metadata.papermill["status"] for c in code]
    done = statuses.count("completed")
    assert 4 <= done < 12
    # The cancel lands in a cell (mostly) or, rarely, between two.
    assert statuses in (["completed"] * done + ["canceled"] + ["pending"] * (11 - done),
                        ["completed"] * done + ["pending"] * (12 - done))
    for i, cell in enumerate(code[:done]):
        assert text_of(cell) == f"cell {i} done\n"
    assert all(not c.outputs for c in code[done + 1:])

    # The runner ended its kernel itself: nothing was left for the agent to kill.
    log = (project.run_dir(run_id) / "output.log").read_text()
    assert re.search(r"stopped by SIGTERM (during|after) cell \d+/12", log)
    assert "leftover" not in log
    assert run_processes(run_id) == []


def test_max_duration_times_out_with_partial_notebook(project: Project) -> None:
    write_notebook(project, "long.ipynb", LONG)
    out = project.cli("submit", "long.ipynb", "--max-duration", "4", "--wait")
    assert out.returncode == 1
    run_id = run_id_of(out)
    assert project.show(run_id)["status"] == "TimedOut"
    nb = executed(project, run_id, "long.ipynb")
    assert "Execution was stopped (SIGTERM" in nb.cells[0].source
    statuses = [c.metadata.papermill["status"] for c in nb.cells if c.cell_type == "code"]
    done = statuses.count("completed")  # how many depends on the machine's speed
    assert statuses[:done] == ["completed"] * done and statuses[-1] == "pending"


def test_missing_kernel_is_one_clear_line(project: Project) -> None:
    write_notebook(project, "nb.ipynb", ["print(1)"])
    out = project.cli("submit", "nb.ipynb", "--kernel", "no-such-kernel", "--wait")
    assert out.returncode == 1
    error = project.show(run_id_of(out))["error"]
    assert "\n" not in error
    assert error.startswith("no kernel named 'no-such-kernel' on this target")
    assert "available: " in error and "python3" in error


def test_missing_papermill_is_one_clear_line(project: Project, tmp_path: Path) -> None:
    # A fresh venv without system site-packages: an interpreter that surely lacks papermill.
    import venv

    venv.create(tmp_path / "bare", with_pip=False)
    bare = str(tmp_path / "bare" / "bin" / "python")
    write_notebook(project, "nb.ipynb", ["print(1)"])
    out = project.cli("submit", "nb.ipynb", "--python", bare, "--wait")
    assert out.returncode == 1
    error = project.show(run_id_of(out))["error"]
    assert error == (f"papermill is not installed in {bare} on this target: pip install "
                     "papermill (or use a requirements environment)")


def test_notebook_kernel_missing_here_falls_back_to_python3(project: Project) -> None:
    path = write_notebook(project, "laptop.ipynb", ["import sys; print(sys.executable)"])
    nb = nbformat.read(path, as_version=4)
    nb.metadata.kernelspec = {"name": "my-laptop-env", "display_name": "Mine",
                              "language": "python"}
    nbformat.write(nb, path)
    out = project.cli("submit", "laptop.ipynb", "--wait")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "the notebook's kernel 'my-laptop-env' is not on this target; using python3" \
        in out.stdout
    assert f"\n{Path(sys.executable).parent}/python" in out.stdout  # the run's interpreter
