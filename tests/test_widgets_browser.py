"""The widgets as a person sees them: JupyterLab 4 in headless Chromium (Debian's, via
Playwright), a real kernel, real runs, a real sweep and the session's Ray cluster.

Each acceptance point of the notebook experience is checked where it shows: the log
pane follows the newest line (and offers "↓ new lines" once scrolled up), the badge
says Completed within 200 ms of the last line, no chart is wider than its cell, a
stopped trial shows its reason, the cluster has its buttons and chart. Screenshots,
light and dark, go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from labserver import JupyterLab, launch_chromium, run_all_cells

ARTIFACTS = Path(__file__).parent / "artifacts"

STREAM = """\
%%submit --name streaming --lines 40
import time
from jupyter_compute.tracking import get_run
run = get_run()
for i in range(150):
    print(f"line {i}", flush=True)
    run.log("loss", 1 / (i + 1), step=i)
    if i % 10 == 0:
        run.log("accuracy", i / 150, step=i)
    time.sleep(0.1)
print("the last line", flush=True)
"""

CURVE = """\
import argparse, time
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser()
p.add_argument("--trial", type=int)
a = p.parse_args()
quality = [0.9, 0.3, 0.85, 0.2][a.trial - 1]
run = get_run()
for step in range(6):
    run.log("Accuracy", quality + 0.01 * step, step=step)
    time.sleep(0.3)
"""

SWEEP = """\
sampling:
    type: grid
    parameter_space:
    - name: --trial
      expression: choice
      values: [1, 2, 3, 4]
policy:
    type: BanditPolicy
    evaluation_interval: 1
    slack_factor: 0.1
primary_metric_name: Accuracy
primary_metric_goal: Maximize
max_total_runs: 4
max_concurrent_runs: 4
"""

# Whether every chart (plotly's root) and the widget itself fit inside their output
# area: [widths of the charts, the output's width, how far the widest one overflows].
FIT = """(out) => {
  const box = out.getBoundingClientRect();
  const charts = [...out.querySelectorAll('.js-plotly-plot')].map(e => e.getBoundingClientRect());
  const over = Math.max(0, ...charts.map(r => r.right - box.right));
  return [charts.map(r => Math.round(r.width)), Math.round(box.width), over];
}"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    root = tmp_path_factory.mktemp("widgets-lab")
    (root / ".jupyter_compute").mkdir()
    server = JupyterLab(root, tmp_path_factory.mktemp("widgets-lab-state")).start()
    yield server
    server.stop()


def notebook(lab: JupyterLab, name: str, *cells: str) -> str:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in ("%load_ext jupyter_compute", *cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, lab.root / name)
    return name


def set_theme(page: Any, dark: bool) -> None:
    page.get_by_role("menuitem", name="Settings").click()
    page.get_by_text("Theme", exact=True).click()
    page.get_by_text("JupyterLab Dark" if dark else "JupyterLab Light", exact=True).click()
    time.sleep(1.0)


def shoot(page: Any, output: Any, name: str) -> None:
    """``name``-light.png and ``name``-dark.png of one output."""
    ARTIFACTS.mkdir(exist_ok=True)
    for dark in (False, True):
        set_theme(page, dark)
        output.screenshot(path=str(ARTIFACTS / f"{name}-{'dark' if dark else 'light'}.png"))
    set_theme(page, False)


def until(check: Any, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.1)


def test_run_widget_follows_the_log_and_ends_on_time(lab: JupyterLab) -> None:
    from playwright.sync_api import sync_playwright

    name = notebook(lab, "stream.ipynb", STREAM)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            run_all_cells(page, lab, name)
            out = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output",
                                                           has=page.locator(".jc-log"))
            log = out.locator(".jc-log-scroll")
            out.locator(".jc-log pre", has_text="line 45").wait_for(timeout=60_000)
            # Record, in the browser, when the last line and the Completed badge appear
            # in the cell (the live view, or the static summary it becomes at the end).
            area = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea")
            area.evaluate("""(out) => {
              window.jcSeen = {};
              const tick = () => {
                const text = out.textContent, now = performance.now();
                if (!window.jcSeen.last && text.includes("the last line")) window.jcSeen.last = now;
                if (!window.jcSeen.done && text.includes("Completed")) window.jcSeen.done = now;
                if (!window.jcSeen.done) setTimeout(tick, 5);
              };
              tick();
            }""")
            # The log follows the newest line while it streams.
            geometry = log.evaluate("e => [e.scrollTop, e.clientHeight, e.scrollHeight]")
            top, height, total = geometry
            assert total > height + 50, geometry  # it does overflow: following matters
            assert total - top - height < 8, geometry
            # Scrolled up to read: the view stays put and offers the new lines.
            ARTIFACTS.mkdir(exist_ok=True)
            log.hover()
            page.mouse.wheel(0, -5000)
            chip = out.locator(".jc-log-new")
            chip.wait_for(state="visible", timeout=5_000)
            assert log.evaluate("e => e.scrollTop") < 20
            chip.click()
            page.wait_for_timeout(300)
            geometry = log.evaluate("e => [e.scrollTop, e.clientHeight, e.scrollHeight]")
            assert geometry[2] - geometry[0] - geometry[1] < 8, geometry
            # More lines than the view keeps: "show all" is offered, and shows line 0.
            toggle = out.locator(".jc-log-toggle")
            assert toggle.inner_text() == "show all"
            assert "line 0\n" not in out.locator(".jc-log pre").inner_text()
            toggle.click()
            out.locator(".jc-log pre", has_text="line 0\n").wait_for(timeout=5_000)
            toggle.click()  # back to the tail, which keeps following
            # Charts: every one inside the cell, integer steps only.
            widths, cell, over = until(lambda: (lambda f: f if len(f[0]) == 2 else None)(
                out.evaluate(FIT)), 30, "two charts")
            assert over <= 1 and max(widths) <= cell, (widths, cell)
            ticks = out.locator(".js-plotly-plot").first.locator(".xtick text").all_text_contents()
            assert ticks and all((t or "").replace(",", "").lstrip("−-").isdigit()
                                 for t in ticks), ticks
            page.wait_for_timeout(300)
            ARTIFACTS.mkdir(exist_ok=True)
            out.screenshot(path=str(ARTIFACTS / "run-widget-running-light.png"))
            # The end: Completed within 200 ms of the last line, and no Cancel button.
            seen = until(lambda: (lambda s: s if s.get("done") else None)(
                page.evaluate("() => window.jcSeen")), 60, "Completed")
            assert seen.get("last"), seen
            assert seen["done"] - seen["last"] < 200, seen
            page.wait_for_timeout(1500)
            # Ended: the output is the static summary (no widget, no Cancel button).
            area.locator(".jupyter-compute-run").wait_for(timeout=30_000)
            assert area.get_by_role("button", name="Cancel").count() == 0
            shoot(page, area.locator(".jp-OutputArea-output").first, "run-widget-finished")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "run-widget-failure.png"), full_page=True)
            print(page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea").inner_text())
            raise
        finally:
            browser.close()


def test_sweep_widget_shows_every_trial_and_why_it_stopped(lab: JupyterLab) -> None:
    from playwright.sync_api import sync_playwright

    (lab.root / "curve.py").write_text(CURVE)
    (lab.root / "sweep.yml").write_text(SWEEP)
    name = notebook(lab, "sweep.ipynb", "%sweep curve.py --config sweep.yml -o s")
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            run_all_cells(page, lab, name)
            out = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output").last
            table = out.locator(".jc-trials")
            # Live from the controller's first decisions: four trials listed, running.
            table.locator("tbody tr").nth(3).wait_for(timeout=30_000)
            ARTIFACTS.mkdir(exist_ok=True)
            out.screenshot(path=str(ARTIFACTS / "sweep-widget-live-light.png"))
            # Ended: the output becomes the static summary, which keeps every decision.
            area = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea")
            summary = area.locator(".jupyter-compute-sweep")
            summary.wait_for(timeout=90_000)
            stopped = summary.locator("tbody tr", has_text="Stopped early")
            assert stopped.count() >= 1, summary.inner_text()
            reason = stopped.first.locator("td").nth(5).inner_text()
            assert reason.startswith("stopped early by BanditPolicy"), reason
            assert stopped.first.locator("td").nth(1).inner_text().strip()  # its run id
            # The table fits its cell: nothing hidden sideways.
            sizes = summary.locator("table").evaluate(
                "t => [t.scrollWidth, t.closest('.jp-OutputArea-output').clientWidth]")
            assert sizes[0] <= sizes[1] + 1, sizes
            # Every trial in the per-trial chart, the one-point ones too (named in its legend).
            legend = summary.locator("svg text").all_text_contents()
            assert sorted(t for t in legend if t.startswith("trial ")) == [
                f"trial {i}" for i in range(1, 5)], legend
            shoot(page, summary, "sweep-summary")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "sweep-widget-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def test_cluster_widget_has_a_chart_and_its_buttons(lab: JupyterLab, ray_session: Any) -> None:
    from playwright.sync_api import sync_playwright

    name = notebook(lab, "cluster.ipynb",
                    "from jupyter_compute import api\n"
                    "from jupyter_compute.widgets.cluster import ClusterWidget\n"
                    f"w = ClusterWidget(api.get_target('cpu-cluster', {str(ray_session.root)!r}),"
                    " interval=0.5)\nw")
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            run_all_cells(page, lab, name)
            out = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output").last
            head = out.locator(".jc-run-head", has_text="of max 2 nodes")
            head.wait_for(timeout=60_000)
            assert "idle nodes removed after" in head.inner_text()
            assert "nodes=" not in out.inner_text()
            # Running: Stop is offered (Start is not), both whole.
            stop = out.get_by_role("button", name="Stop")
            stop.wait_for(timeout=10_000)
            assert out.get_by_role("button", name="Start").count() == 0
            box = stop.bounding_box()
            assert box is not None and box["width"] > 40
            chart = out.locator(".js-plotly-plot")
            chart.wait_for(timeout=30_000)
            legend = chart.locator(".legend").text_content() or ""  # SVG: no inner_text
            assert all(word in legend for word in ("current", "pending", "idle")), legend
            notes = chart.locator(".annotation").all_text_contents()
            assert any(n.startswith("max 2") for n in notes), notes
            widths, cell, over = out.evaluate(FIT)
            assert over <= 1 and max(widths) <= cell, (widths, cell)
            page.wait_for_timeout(1500)
            shoot(page, out, "cluster-widget")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "cluster-widget-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
