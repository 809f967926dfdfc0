"""The final state of every display is static: a notebook run in JupyterLab (headless
Chromium, Debian's, via Playwright), saved, its kernel shut down, reopened in a new
page, shows every result (name, status, last log line, a chart) and never "Error
displaying widget"; the saved file has no widget-view output; nbconvert's HTML does
not double-space the log. The cluster view is of the session's real Ray cluster
(tests/raycluster.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from raycluster import RayProject

from labserver import JupyterLab, launch_chromium, run_all_cells

ARTIFACTS = Path(__file__).parent / "artifacts"
WIDGET = "application/vnd.jupyter.widget-view+json"
WORKSPACE_ENV = "JUPYTER_COMPUTE_WORKSPACE"

WAITED = """%%submit --wait --name waited
import time
from jupyter_compute.tracking import get_run
run = get_run()
for i in range(12):
    print(f"waited line {i}", flush=True)
    run.log("loss", 1 / (i + 1), step=i)
    time.sleep(0.05)
"""

BACKGROUND = """import time
from jupyter_compute.tracking import get_run
run = get_run()
for i in range(6):
    print(f"background line {i}", flush=True)
    run.log("accuracy", 0.5 + i / 20, step=i)
    time.sleep(0.3)
with open("outputs/result.txt", "w") as f:
    f.write("done")
"""

TRAIN = """import argparse, time
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser()
p.add_argument("--penalty", type=float)
a = p.parse_args()
run = get_run()
for step in range(3):
    run.log("Accuracy", 0.9 - abs(a.penalty - 1) * (0.3 + 0.05 * step), step=step)
    print(f"trial step {step}", flush=True)
    time.sleep(0.1)
"""

SWEEP = """sampling:
    type: grid
    parameter_space:
    - name: --penalty
      expression: choice
      values: [0.5, 1, 1.5]
primary_metric_name: Accuracy
primary_metric_goal: Maximize
max_total_runs: 3
max_concurrent_runs: 3
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory,
        ray_session: RayProject) -> Iterator[JupyterLab]:
    root = tmp_path_factory.mktemp("static-lab")
    # The kernel works in the Ray session's workspace (JUPYTER_COMPUTE_WORKSPACE, which
    # the server passes on), so `%compute show cpu-cluster` shows its real cluster.
    before = os.environ.get(WORKSPACE_ENV)
    os.environ[WORKSPACE_ENV] = str(ray_session.root)
    try:
        server = JupyterLab(root, tmp_path_factory.mktemp("static-lab-state")).start()
    finally:
        if before is None:
            os.environ.pop(WORKSPACE_ENV)
        else:
            os.environ[WORKSPACE_ENV] = before
    yield server
    server.stop()


def write_notebook(root: Path) -> None:
    (root / "bg.py").write_text(BACKGROUND)
    (root / "train.py").write_text(TRAIN)
    (root / "sweep.yml").write_text(SWEEP)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in (
        "%load_ext jupyter_compute",
        WAITED,
        "%submit bg.py --name background -o bg",
        "bg.wait()",
        "%sweep train.py --config sweep.yml --name tune --wait",
        "%compute show cpu-cluster",
    )]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "static.ipynb")


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def saved(root: Path) -> dict:
    return json.loads((root / "static.ipynb").read_text())


def widget_outputs(nb: dict) -> list[dict]:
    return [o for c in nb["cells"] for o in c.get("outputs", []) if WIDGET in o.get("data", {})]


def save(page) -> None:
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Control+s")
    time.sleep(1.5)


def kernel_menu(page, item: str, button: str | None = None) -> None:
    """Kernel > ``item``, confirming with ``button`` where JupyterLab asks."""
    page.get_by_role("menuitem", name="Kernel", exact=True).click()
    page.get_by_text(item, exact=True).click()
    if button:
        page.locator(".jp-Dialog").get_by_role("button", name=button, exact=True).click()


def assert_every_result_shows(page) -> None:
    text = page.locator(".jp-Notebook").inner_text()
    assert "Error displaying widget" not in page.content()
    for words in ("waited", "waited line 11", "background", "background line 5",
                  "result.txt", "tune", "Completed", "cpu-cluster · nodes"):
        assert words in text, f"{words!r} is not shown: {text[-3000:]}"
    outputs = page.locator(".jp-OutputArea-output")
    charts = [outputs.nth(i).locator("svg").count() for i in range(outputs.count())]
    assert sum(1 for n in charts if n) >= 3, f"charts per output: {charts}"


def test_saved_notebook_shows_results_after_the_kernel_goes(lab: JupyterLab) -> None:
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright

    write_notebook(lab.root)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            run_all_cells(page, lab, "static.ipynb")
            done = page.locator(".jp-OutputArea-output", has_text="sweep ")
            done.filter(has_text="Completed").first.wait_for(timeout=180_000)
            page.locator(".jp-OutputArea-output .jupyter-widgets", has_text="cpu-cluster") \
                .first.wait_for(timeout=60_000)  # the live cluster view
            # Ended views are static at once; the cluster view is live until the kernel goes.
            save(page)
            wait_for(lambda: len(widget_outputs(saved(lab.root))) == 1, 30,
                     "only the cluster view to be live")

            kernel_menu(page, "Shut Down Kernel")
            wait_for(lambda: page.locator(".jp-OutputArea-output .jupyter-compute-cluster")
                     .count() == 1, 30, "the cluster output to become static")
            save(page)
            nb = saved(lab.root)
            assert widget_outputs(nb) == [], "a widget view is left in the saved notebook"
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "static-failure.png"), full_page=True)
            raise

        # Reopened in a new page (and a new kernel): every result shows, no error.
        again = browser.new_page(viewport={"width": 1280, "height": 3400})
        try:
            again.goto(lab.url("static.ipynb"))
            again.wait_for_selector("#jupyterlab-splash", state="detached", timeout=60_000)
            again.locator(".jp-OutputArea-output", has_text="cpu-cluster").first.wait_for()
            time.sleep(2)  # the widget manager would say "model not found" by now
            assert_every_result_shows(again)
            again.screenshot(path=str(ARTIFACTS / "reopened-light.png"), full_page=True)
            again.get_by_role("menuitem", name="Settings", exact=True).click()
            again.get_by_text("Theme", exact=True).click()
            again.get_by_text("JupyterLab Dark", exact=True).click()
            time.sleep(2)
            again.screenshot(path=str(ARTIFACTS / "reopened-dark.png"), full_page=True)
            again.get_by_role("menuitem", name="Settings", exact=True).click()
            again.get_by_text("Theme", exact=True).click()
            again.get_by_text("JupyterLab Light", exact=True).click()

            # Run again in this page's new kernel, then restart it without a reload:
            # JupyterLab drops the old kernel's messages, the extension makes the live
            # cluster view static (the runs' views already are: they ended).
            again.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for()
            again.get_by_role("menuitem", name="Run", exact=True).click()
            again.get_by_text("Run All Cells", exact=True).click()
            wait_for(lambda: again.locator(".jp-OutputArea-output", has_text="sweep ")
                     .count() == 2, 180, "the sweep to end again")  # table + last line
            again.locator(".jp-OutputArea-output .jupyter-widgets", has_text="cpu-cluster") \
                .first.wait_for(timeout=60_000)
            kernel_menu(again, "Restart Kernel…", "Confirm Kernel Restart")
            wait_for(lambda: again.locator(".jp-OutputArea-output .jupyter-compute-cluster")
                     .count() == 1, 30, "the cluster output to become static on restart")
            time.sleep(2)
            assert_every_result_shows(again)
            assert again.locator(".jupyter-widgets-disconnected").count() == 0
            save(again)
            assert widget_outputs(saved(lab.root)) == [], "a widget view is left after restart"
            again.screenshot(path=str(ARTIFACTS / "restarted-light.png"), full_page=True)
        except Exception:
            again.screenshot(path=str(ARTIFACTS / "reopened-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

    html, _ = HTMLExporter().from_notebook_node(nbformat.read(lab.root / "static.ipynb", 4))
    assert "waited line 10\nwaited line 11" in html, "the log is not one line per line"
    assert "<svg" in html and WIDGET not in html
