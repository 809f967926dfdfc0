"""The magics and the RunWidget in a real IPython kernel (jupyter_client)."""

from __future__ import annotations

import ast
import json
import time

import pytest

from conftest import Project
from kernel import Kernel


def test_submit_cell_imports_the_folder_and_returns_at_once(project: Project,
                                                            kernel: Kernel) -> None:
    project.write("helper.py", "GREETING = 'hello from helper'\n")
    out = kernel.run("%%submit --name cellrun -o r -- --flag 'two words'\n"
                     "import sys, helper, time\n"
                     "print(helper.GREETING, sys.argv[1:])\n"
                     "time.sleep(1)\n")
    assert out.status == "ok", out.error_text
    assert out.seconds < 3
    assert out.stdout == ""  # the cell prints nothing else
    assert any("application/vnd.jupyter.widget-view+json" in d for d in out.data)
    assert kernel.value("r.wait()") == "Completed"
    assert "hello from helper ['--flag', 'two words']" in kernel.value("r.log()")


def test_second_cell_runs_while_a_run_streams(project: Project, kernel: Kernel) -> None:
    project.write("slow.py", "import time\nfor i in range(40):\n"
                             "    print(i, flush=True); time.sleep(0.1)\n")
    assert kernel.run("%submit slow.py -o r").status == "ok"
    t0 = time.monotonic()
    out = kernel.run("1 + 1")
    assert out.status == "ok" and time.monotonic() - t0 < 1.0
    assert out.data[-1]["text/plain"] == "2"
    assert kernel.value("r.status()") == "Running"
    assert kernel.value("r.wait()") == "Completed"


def test_reattach_in_a_new_kernel_shows_every_line(project: Project) -> None:
    project.write("count.py", "import time\nfor i in range(300):\n"
                              "    print(f'line {i}', flush=True)\n"
                              "    time.sleep(0.005)\n")
    first = Kernel(project.root)
    first.run("%load_ext jupyter_compute")
    assert first.run("%submit count.py -o r").status == "ok"
    run_id = first.value("r.id")
    first.shutdown()  # the kernel goes away mid-run; the run does not

    second = Kernel(project.root)
    try:
        second.run("%load_ext jupyter_compute")
        out = second.run(f"%run_show {run_id[-4:]}")
        assert out.status == "ok", out.error_text
        assert any("application/vnd.jupyter.widget-view+json" in d for d in out.data)
        code = (f"from jupyter_compute import Run\nfrom jupyter_compute.magics import show\n"
                f"w = show(Run.get({run_id!r}))\nw.follower.join(60)")
        assert second.run(code).status == "ok"
        assert second.value("w.status") == "Completed"
        widget_text = second.value("repr(w.log_text)")
        log = (project.run_dir(run_id) / "output.log").read_text()
        assert ast.literal_eval(widget_text) == log
        assert len(log.splitlines()) == 300
    finally:
        second.shutdown()


def test_wait_then_interrupt_detaches_without_canceling(project: Project,
                                                         kernel: Kernel) -> None:
    project.write("long.py", "import time\ntime.sleep(3)\nprint('finished')\n")
    out = kernel.run("%submit long.py --wait -o r", interrupt_after=1.0)
    assert "goes on" in out.stdout, out.stdout + out.error_text
    assert kernel.value("r.status()") == "Running"
    assert kernel.value("r.wait()") == "Completed"


def test_wait_cancel_on_interrupt(project: Project, kernel: Kernel) -> None:
    project.write("long.py", "import time\ntime.sleep(30)\n")
    out = kernel.run("%submit long.py --wait --cancel-on-interrupt -o r", interrupt_after=1.0)
    assert "canceled" in out.stdout
    assert kernel.value("r.wait(timeout=10)") == "Canceled"


def test_compute_attach_list_show_detach(project: Project, kernel: Kernel) -> None:
    out = kernel.run("%compute attach sys --type local --python /usr/bin/python3")
    assert out.status == "ok" and "attached sys" in out.stdout, out.error_text
    listed = kernel.run("%compute list")
    assert "/usr/bin/python3" in listed.data[-1]["text/plain"]
    assert "<table>" in listed.data[-1]["text/html"]
    shown = kernel.run("%compute show sys")
    assert "python=/usr/bin/python3" in shown.data[-1]["text/plain"]
    assert kernel.run("%compute detach sys").status == "ok"


def test_compute_list_says_what_local_runs_on(project: Project, kernel: Kernel) -> None:
    # `local` has no options: its row said nothing (an empty grey chip). It runs on this
    # machine with the kernel's own interpreter, and now says so.
    python = kernel.value("__import__('sys').executable")
    version = kernel.value("'.'.join(map(str, __import__('sys').version_info[:3]))")
    listed = kernel.run("%compute list")
    assert listed.status == "ok", listed.error_text
    bundle = listed.data[-1]
    row = next(line for line in bundle["text/plain"].splitlines() if line.startswith("local"))
    assert row.split(None, 2) == ["local", "local", f"this machine, python {version} ({python})"]
    html_row = bundle["text/html"].split("<td><b>local</b></td>", 1)[1].split("</tr>", 1)[0]
    assert f"this machine, python {version} ({python})" in html_row
    assert "<code></code>" not in bundle["text/html"]
    shown = kernel.run("%compute show local").data[0]
    assert f"python {version} ({python})" in shown["text/plain"]


@pytest.mark.parametrize("line, words", [
    ("%submit nope.py", "no script 'nope.py'"),
    ("%submit --bogus", "unrecognized arguments: --bogus"),
    ("%%submit --target cpu-clster\nprint(1)", "no target named 'cpu-clster'"),
    ("%compute attach x --type lokal", "did you mean 'local'?"),
    ("%compute frobnicate", "invalid choice"),
    ("%run_show 20990101-nope", "no run"),
])
def test_errors_are_one_line(kernel: Kernel, line: str, words: str) -> None:
    out = kernel.run(line)
    assert out.status == "error"
    # IPython prints its own UsageError (bad flags) as one stderr line, ours through
    # _render_traceback_; either way one line and no traceback.
    text = (out.error_text + out.stderr).strip()
    assert words in text
    assert len(text.splitlines()) == 1, text
    assert "Traceback" not in text


def test_debug_switch_shows_the_traceback(kernel: Kernel) -> None:
    kernel.run("import os; os.environ['JUPYTER_COMPUTE_DEBUG'] = '1'")
    out = kernel.run("%submit nope.py")
    assert "Traceback" in out.error_text


def test_runs_table_and_run_as_cell_value(project: Project, kernel: Kernel) -> None:
    project.write("m.py", "from jupyter_compute.tracking import get_run\n"
                          "get_run().log('acc', 0.75)\nprint('ok')\n")
    kernel.run("%submit m.py --wait -o r")
    out = kernel.run("%runs --limit 5")
    assert "Completed" in out.data[-1]["text/plain"] and "<table>" in out.data[-1]["text/html"]
    value = kernel.run("r")
    bundle = value.data[-1]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "Completed" in bundle["text/html"]


def test_widget_memory_and_updates_stay_bounded(project: Project, kernel: Kernel) -> None:
    project.write("flood.py", "import sys\nw = sys.stdout.write\n"
                              "for i in range(200000):\n    w(f'line {i}\\n')\n")
    kernel.run("%submit flood.py -o r --lines 100")
    kernel.run("r.wait()")
    code = ("from jupyter_compute.magics import show\nw = show(r, tail_lines=100)\n"
            "w.follower.join(60)\nprint(len(w.log_text.splitlines()), w.log_text.split()[-1])")
    out = kernel.run(code)
    assert out.stdout.split() == ["100", "199999"], out.stdout + out.error_text


def test_static_summary_in_a_saved_notebook(project: Project) -> None:
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    project.write("m.py", "from jupyter_compute.tracking import get_run\n"
                          "get_run().log('accuracy', 0.875, step=3)\nprint('the last line')\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext jupyter_compute"),
                nbformat.v4.new_code_cell("%submit m.py --wait")]
    NotebookClient(nb, timeout=120, kernel_name="python3", store_widget_state=False,
                   resources={"metadata": {"path": str(project.root)}}).execute()
    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "Completed" in html and "the last line" in html and "accuracy 0.875" in html
    widget_outputs = [o for o in nb.cells[1].outputs if "data" in o]
    assert json.dumps(widget_outputs).count("Completed") >= 1


def test_every_notebook_in_notebooks_runs(tmp_path) -> None:
    import shutil
    from pathlib import Path

    import nbformat
    from nbclient import NotebookClient

    folder = tmp_path / "notebooks"
    shutil.copytree(Path(__file__).parent.parent / "notebooks", folder,
                    ignore=shutil.ignore_patterns(".jupyter_compute", ".ipynb_checkpoints"))
    notebooks = sorted(folder.glob("*.ipynb"))
    assert notebooks
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(folder)}}).execute()


def test_notebook_run_shows_cell_progress(project: Project, kernel: Kernel) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("print(x + 1)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, project.root / "tiny.ipynb")
    out = kernel.run("%submit tiny.ipynb --wait -o r")
    assert "Completed" in out.stdout, out.stdout + out.error_text
    assert kernel.value("r.progress()") == "{'cell': 2, 'of': 2, 'source': 'print(x + 1)'}"
    assert kernel.value("'progress' in r.metrics()") == "False"
    code = ("from jupyter_compute.magics import show\nw = show(r)\nw.follower.join(30)\n"
            "print(w.header.value)")
    assert "cell <b>2/2</b>" in kernel.run(code).stdout
    assert kernel.value("[p.name for p in r.outputs()]") == "['tiny.ipynb']"
