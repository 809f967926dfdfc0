"""Comparing runs: real runs on the local target, the real CLI, ``%runs --compare`` and
the compare widget in a real kernel and in JupyterLab (headless Chromium). Scripts take
a fraction of a second; the JupyterLab test starts its own server (~30 s)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

import jupyter_compute
from jupyter_compute import submit
from jupyter_compute.exceptions import UsageError
from jupyter_compute.sweep import SweepConfig, choice, sweep

from conftest import Project
from kernel import Kernel

ARTIFACTS = Path(__file__).parent / "artifacts"

#: Logs the given losses (and, from the second version on, an accuracy) by step.
TRAIN_V1 = """
import argparse
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser()
p.add_argument("--losses")
p.add_argument("--note", default="")
a = p.parse_args()
run = get_run()
run.tag("model", "linear" if a.note else "tree")
for step, loss in enumerate(a.losses.split(",")):
    run.log("loss", float(loss), step=step)
"""
TRAIN_V2 = TRAIN_V1 + """
for step in range(3):
    run.log("accuracy", [0.5, 0.8, 0.7][step], step=step)
"""


def two_runs(project: Project, git: bool = False) -> tuple[str, str]:
    """Run A, then change the code (one file changed, one removed, one added, a binary
    one changed) and run B in an environment built from a requirements file; with
    ``git``, each from a commit of its own."""
    project.write("train.py", TRAIN_V1)
    project.write("helper.py", "X = 1\n")
    (project.root / "weights.bin").write_bytes(b"\0\1\2")
    project.write("reqs.txt", "# no packages: an environment of its own all the same\n")
    if git:
        commit(project.root, "init")
    a = submit("train.py", arguments=["--losses", "0.9,0.3,0.5"], wait=True)
    project.write("train.py", TRAIN_V2)
    (project.root / "helper.py").unlink()
    project.write("extra.py", "Y = 2\n")
    (project.root / "weights.bin").write_bytes(b"\0\1\3")
    if git:
        commit(project.root, "accuracy")
    b = submit("train.py", arguments=["--losses", "0.8,0.6,0.2", "--note", "n" * 150],
               requirements="reqs.txt", wait=True)
    assert (a.status().value, b.status().value) == ("Completed", "Completed"), b.log()
    return a.id, b.id


def commit(root: Path, message: str) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], check=True, text=True,
                              capture_output=True).stdout.strip()

    if not (root / ".git").exists():
        git("init", "-q", "-b", "main")
        (root / ".gitignore").write_text(".jupyter_compute/\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", message)
    return git("rev-parse", "HEAD")


def test_compare_json_gives_metrics_arguments_and_the_snapshot_diff(project: Project) -> None:
    a, b = two_runs(project, git=True)
    out = project.cli("compare", a, b, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    ra, rb = result["runs"]
    assert (ra["id"], rb["id"]) == (a, b)
    assert ra["arguments"] == ["--losses", "0.9,0.3,0.5"]
    assert rb["arguments"][:2] == ["--losses", "0.8,0.6,0.2"]
    # loss is lowered (by its name): best is the lowest, wherever it came.
    assert ra["metrics"]["loss"] == {"last": 0.5, "last_step": 2, "best": 0.3, "best_step": 1,
                                     "count": 3}
    assert rb["metrics"]["loss"]["last"] == 0.2 and rb["metrics"]["loss"]["best"] == 0.2
    # accuracy is raised; run A never logged it.
    assert rb["metrics"]["accuracy"]["last"] == 0.7 and rb["metrics"]["accuracy"]["best"] == 0.8
    assert "accuracy" not in ra["metrics"]
    assert (ra["tags"], rb["tags"]) == ({"model": "tree"}, {"model": "linear"})
    assert result["metrics"] == {"loss": {"best": "min", "by": "its name"},
                                 "accuracy": {"best": "max", "by": "its name"}}
    for r in (ra, rb):
        assert r["target"] == "local" and r["status"] == "Completed"
        assert r["duration_seconds"] > 0
    # Each run's commit; the history between them is git's to tell.
    log = subprocess.run(["git", "log", "--format=%H"], cwd=project.root, text=True,
                         capture_output=True, check=True).stdout.split()
    assert [ra["git"]["commit"], rb["git"]["commit"]] == log[::-1]
    assert ra["git"]["dirty"] is False and ra["git"]["branch"] == "main"
    # A's environment is the target's python; B's was built from its requirements.
    assert ra["environment"] is None
    assert rb["environment"]["source"] == "requirements reqs.txt"
    assert len(rb["environment"]["key"]) >= 12 and rb["environment"]["installer"]
    [diff] = result["snapshot_diff"]
    assert (diff["base"], diff["run"]) == (a, b)
    assert diff["added"] == ["extra.py"]
    assert diff["removed"] == ["helper.py"]
    assert diff["changed"] == ["train.py", "weights.bin"]

    # The text table is side by side and fits 100 columns (the long argument is cut).
    out = project.cli("compare", a, b)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert a in lines[0] and b in lines[0]
    assert any(line.startswith("*arguments") and line.endswith("…") for line in lines)
    assert any(line.startswith("*loss best (min)") and "0.3 @1" in line and "0.2 @2" in line
               for line in lines)
    assert any(line.startswith("*git") and log[1][:10] in line and log[0][:10] in line
               for line in lines)
    assert any(line.startswith("*environment") and "requirements reqs.txt" in line
               for line in lines)
    assert "    + extra.py" in lines and "    - helper.py" in lines and "    ~ train.py" in lines


def test_diff_prints_a_unified_diff_of_one_file(project: Project) -> None:
    a, b = two_runs(project)
    out = project.cli("compare", a, b, "--diff", "train.py")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == [f"--- {a}/train.py", f"+++ {b}/train.py"]
    assert lines[2].startswith("@@ ")
    assert '+    run.log("accuracy", [0.5, 0.8, 0.7][step], step=step)' in lines
    assert not any(line.startswith("-") and not line.startswith("---") for line in lines)

    out = project.cli("compare", a, b, "--diff", "extra.py")  # added: from nothing
    assert out.stdout.splitlines()[:2] == ["--- /dev/null", f"+++ {b}/extra.py"]
    assert "+Y = 2" in out.stdout
    out = project.cli("compare", a, b, "--diff", "weights.bin")
    assert out.stdout == f"Binary files {a}/weights.bin and {b}/weights.bin differ\n"

    # The Python API gives the same text.
    assert jupyter_compute.compare(a, b).diff("extra.py").startswith("--- /dev/null")


def test_a_sweep_compares_as_its_trials(project: Project) -> None:
    project.write("curve.py", """
        import argparse
        from jupyter_compute.tracking import get_run
        p = argparse.ArgumentParser()
        p.add_argument("--trial", type=int)
        a = p.parse_args()
        run = get_run()
        for step, loss in enumerate([0.5, 0.9, 0.7] if a.trial == 1 else [0.4, 0.2, 0.6]):
            run.log("loss", loss * a.trial, step=step)
    """)
    # "loss" with goal Maximize, against its name on purpose: the sweep's goal must win.
    config = SweepConfig(parameter_space={"--trial": choice(1, 2)}, sampling="grid",
                         primary_metric_name="loss", primary_metric_goal="maximize")
    s = sweep("curve.py", config, wait=True)
    out = project.cli("compare", s.id, "--json")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["sweep"] == s.id
    runs = result["runs"]
    assert [(r["trial"], r["params"], r["parent_id"]) for r in runs] == [
        (1, {"--trial": 1}, s.id), (2, {"--trial": 2}, s.id)]
    assert result["metrics"]["loss"] == {"best": "max", "by": "the sweep's goal"}
    assert [(r["metrics"]["loss"]["best"], r["metrics"]["loss"]["last"]) for r in runs] == [
        (0.9, 0.7), (pytest.approx(1.2), 1.2)]
    assert [r["arguments"] for r in runs] == [["--trial", "1"], ["--trial", "2"]]
    assert result["snapshot_diff"][0]["changed"] == []  # the trials ran the same code
    text = project.cli("compare", s.id).stdout
    assert "*--trial" in text and "max for loss (by the sweep's goal)" in text


def test_bad_input_is_one_line(project: Project) -> None:
    a, b = two_runs(project)
    for args, says in (
            ((a, "nope"), "no run 'nope' in this workspace"),
            ((a,), "compare needs two runs or more"),
            ((a, b, "--diff", "trian.py"), "no file 'trian.py' in these runs' snapshots "
                                           "(did you mean 'train.py'?)"),
            ((a, b, "--json", "--diff", "train.py"), "not allowed with argument"),
            ((a, a, "--diff", "train.py"), "compare needs two runs or more")):
        out = project.cli("compare", *args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stdout == "" and says in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    with pytest.raises(UsageError, match="no run 'nope'"):
        jupyter_compute.compare(a, "nope")
    # Outside a kernel, a comparison shows as its table (HTML and text), not a widget.
    bundle = jupyter_compute.compare(a, b)._repr_mimebundle_()
    assert sorted(bundle) == ["text/html", "text/plain"]
    assert "<table " in bundle["text/html"] and "snapshot diff" in bundle["text/plain"]


def test_widget_overlays_each_metric_per_run_in_a_kernel(project: Project,
                                                         kernel: Kernel) -> None:
    a, b = two_runs(project)
    k = kernel
    out = k.run(f"%runs --compare {a} {b}")
    assert out.status == "ok", out.error_text
    [shown] = [d for d in out.data if "application/vnd.jupyter.widget-view+json" in d]
    assert "<table " in shown["text/html"]  # the static fallback travels with the widget
    out = k.run("import jupyter_compute\n"
                "from jupyter_compute.widgets.compare import CompareWidget\n"
                f"w = CompareWidget(jupyter_compute.compare({a!r}, {b!r}))\n"
                "print([(c.title, sorted(c.series), c.fig.layout.showlegend) "
                "for c in w.charts.charts])")
    assert out.status == "ok", out.error_text
    la, lb = f"train {a.rsplit('-', 1)[1]}", f"train {b.rsplit('-', 1)[1]}"
    # One series per run per metric, with a legend; run A logged no accuracy, and the
    # chart of a metric only one run logged names that run in its title.
    assert out.stdout.strip() == str([("loss (min is best)", sorted([la, lb]), True),
                                      (f"accuracy (max is best) · only {lb}", [lb], False)])
    assert k.value("[len(s.ys) for c in w.charts.charts for s in c.series.values()]") == \
        "[3, 3, 3]"
    # On the time axis every run starts at 0, though B ran after A.
    out = k.run("w.charts.x_axis.value = 'time'\n"
                "print([float(t.x[0]) for t in w.charts.charts[0].fig.data])")  # arrays
    assert out.stdout.strip() == "[0.0, 0.0]", out.error_text
    # Choosing a changed file shows its diff.
    out = k.run("w.files.value = 'train.py'\nprint('accuracy' in w.diff.value)")
    assert out.stdout.strip() == "True", out.error_text

    out = k.run(f"%runs --compare {a} {b} --diff extra.py")
    assert out.status == "ok" and out.stdout.startswith("--- /dev/null"), out.error_text
    out = k.run(f"%runs --compare {a} nope")
    assert out.status == "error"
    assert out.error_text.strip() == (
        "UsageError: no run 'nope' in this workspace; list runs with 'jupyter-compute runs'")


def test_widget_in_jupyterlab_overlays_the_runs_with_a_legend(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """As a person sees it: JupyterLab in headless Chromium, ``%runs --compare``."""
    import nbformat
    from playwright.sync_api import sync_playwright

    from labserver import JupyterLab, launch_chromium, run_all_cells

    root = tmp_path / "lab"
    (root / ".jupyter_compute").mkdir(parents=True)
    monkeypatch.chdir(root)
    a, b = two_runs(Project(root))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c)
                for c in ("%load_ext jupyter_compute", f"%runs --compare {a} {b}")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "compare.ipynb")
    lab = JupyterLab(root, tmp_path / "lab-state").start()
    try:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            try:
                run_all_cells(page, lab, "compare.ipynb")
                out = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output").last
                charts = out.locator(".js-plotly-plot")
                charts.nth(1).wait_for(timeout=60_000)
                assert charts.count() == 2
                loss = charts.first
                assert loss.locator(".scatterlayer .trace").count() == 2  # one per run
                legend = loss.locator(".legend .traces").all_text_contents()
                assert sorted(t.strip() for t in legend) == sorted(
                    [f"train {a.rsplit('-', 1)[1]}", f"train {b.rsplit('-', 1)[1]}"])
                # Every chart inside the cell; the table and the diff below them.
                fit = out.evaluate("""(out) => {
                  const box = out.getBoundingClientRect();
                  return Math.max(0, ...[...out.querySelectorAll('.js-plotly-plot')].map(
                    e => e.getBoundingClientRect().right - box.right)); }""")
                assert fit <= 1, fit
                assert "loss best (min)" in out.locator("table").first.inner_text()
                out.get_by_label("diff of").select_option("train.py")
                out.locator("pre", has_text="accuracy").wait_for(timeout=10_000)
                ARTIFACTS.mkdir(exist_ok=True)
                out.screenshot(path=str(ARTIFACTS / "compare-widget.png"))
            except Exception:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "compare-widget-failure.png"),
                                full_page=True)
                raise
            finally:
                browser.close()
    finally:
        lab.stop()
