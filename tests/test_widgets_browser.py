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
import raycluster

from labserver import JupyterLab, launch_chromium, run_all_cells, set_theme

ray_session = raycluster.ray_session  # the session's Ray cluster (cpu-cluster)

ARTIFACTS = Path(__file__).parent / "artifacts"

# Streams until the test releases it (so a busy machine cannot end it before the
# test has looked): at least 150 lines, one every 0.1 s.
STREAM = """\
%%submit --name streaming --lines 40
import os, time
from jupyter_compute.tracking import get_run
run = get_run()
i = 0
while i < 150 or not os.path.exists(RELEASE):
    print(f"line {i}", flush=True)
    run.log("loss", 1 / (i + 1), step=i)
    if i % 10 == 0:
        run.log("accuracy", i / (i + 50), step=i)
    time.sleep(0.1)
    i += 1
print("the last line", flush=True)
"""

# GATE: a file; each trial's first interval lasts until the test removes it, so the
# sweep is seen live however slow the machine is (bounded: a failed test strands none).
CURVE = """\
import argparse, os, time
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser()
p.add_argument("--trial", type=int)
a = p.parse_args()
quality = [0.9, 0.3, 0.85, 0.2][a.trial - 1]
run = get_run()
for step in range(6):
    run.log("Accuracy", quality + 0.01 * step, step=step)
    deadline = time.monotonic() + 300
    while step == 0 and os.path.exists(GATE) and time.monotonic() < deadline:
        time.sleep(0.1)
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

# How the charts sit in their output area: [the drawn width of each figure (its svg,
# which a box narrower than the figure would clip), the output's width, how far the
# widest one overflows, the top of each figure].
FIT = """(out) => {
  const box = out.getBoundingClientRect();
  const charts = [...out.querySelectorAll('.js-plotly-plot')].map(
    e => (e.querySelector('.main-svg') || e).getBoundingClientRect());
  const over = Math.max(0, ...charts.map(r => r.right - box.right));
  return [charts.map(r => Math.round(r.width)), Math.round(box.width), over,
          charts.map(r => Math.round(r.top))];
}"""


def fitted(out: Any, count: int) -> tuple[list[int], int, list[int]]:
    """Wait until ``count`` figures are drawn and none overflows the output area (a
    figure is drawn first, then fitted to its box); their widths, the output's, tops."""
    last: list[Any] = []

    def check() -> Any:
        last[:] = out.evaluate(FIT)
        widths, cell, over, _tops = last
        return len(widths) == count and over <= 1 and max(widths) <= cell

    try:
        until(check, 30, f"{count} charts inside the cell")
    except AssertionError:
        raise AssertionError(f"charts do not fit: {last}") from None
    widths, cell, _over, tops = last
    return widths, cell, tops


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


def snap(page: Any, output: Any, path: Path) -> None:
    """A screenshot of ``output`` as it is now. (An element screenshot waits for the
    element to hold still, which a widget that streams on a busy machine may not.)"""
    output.scroll_into_view_if_needed()
    page.screenshot(path=str(path), clip=output.bounding_box())


def shoot(page: Any, output: Any, name: str) -> None:
    """``name``-light.png and ``name``-dark.png of one output."""
    ARTIFACTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        set_theme(page, theme)
        snap(page, output, ARTIFACTS / f"{name}-{theme}.png")
    set_theme(page, "light")


def theme_colours(out: Any) -> dict[str, str]:
    """What the first chart is painted with: its title's text colour, its background,
    and the theme's font colour, as the browser computed them."""
    return out.evaluate("""(out) => {
      const plot = out.querySelector('.js-plotly-plot');
      const probe = document.createElement('span');
      probe.style.color = 'var(--jp-ui-font-color1)';
      out.appendChild(probe);
      const theme = getComputedStyle(probe).color;
      probe.remove();
      return {title: getComputedStyle(plot.querySelector('.gtitle')).fill,
              paper: getComputedStyle(plot.querySelector('.main-svg')).backgroundColor,
              bg: [...plot.querySelectorAll('.bg')].map(
                e => getComputedStyle(e).fillOpacity).join(), theme};
    }""")


def follows_the_theme(page: Any, out: Any) -> None:
    """In both themes, the chart's text is the theme's font colour on no background."""
    for theme in ("light", "dark"):
        set_theme(page, theme)
        colours = theme_colours(out)
        assert colours["title"] == colours["theme"], (theme, colours)
        assert colours["paper"] in ("rgba(0, 0, 0, 0)", "transparent"), (theme, colours)
        assert set(colours["bg"].split(",")) <= {"", "0"}, (theme, colours)  # see-through


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

    release = lab.root / "release-stream"
    name = notebook(lab, "stream.ipynb", STREAM.replace("RELEASE", repr(str(release))))
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
                if (!window.jcSeen.done || !window.jcSeen.last) setTimeout(tick, 5);
              };
              tick();
            }""")
            # The log follows the newest line while it streams.
            geometry = log.evaluate("e => [e.scrollTop, e.clientHeight, e.scrollHeight]")
            top, height, total = geometry
            assert total > height + 50, geometry  # it does overflow: following matters
            assert total - top - height < 8, geometry
            # Charts: both inside the cell, side by side, sharing its width; integer steps.
            widths, cell, tops = fitted(out, 2)
            assert tops[0] == tops[1] and min(widths) > 0.4 * cell, (widths, cell, tops)
            ticks = out.locator(".js-plotly-plot").first.locator(".xtick text").all_text_contents()
            assert ticks and all((t or "").replace(",", "").lstrip("−-").isdigit()
                                 for t in ticks), ticks
            ARTIFACTS.mkdir(exist_ok=True)
            for theme in ("light", "dark"):
                set_theme(page, theme)
                snap(page, out, ARTIFACTS / f"run-widget-running-{theme}.png")
            set_theme(page, "light")
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
            out.locator(".jc-log pre", has_text="line 0\n").wait_for(timeout=20_000)
            toggle.click()  # back to the tail, which keeps following
            # The end: Completed within 200 ms of the last line, and no Cancel button.
            assert "Running" in out.locator(".jc-run-head").inner_text()
            release.touch()
            seen = until(lambda: (lambda s: s if s.get("done") else None)(
                page.evaluate("() => window.jcSeen")), 60, "Completed")
            seen = until(lambda: (lambda s: s if s.get("last") else None)(
                page.evaluate("() => window.jcSeen")), 10, "the last line")
            assert abs(seen["done"] - seen["last"]) < 200, seen
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


def test_sweep_widget_shows_every_trial_and_why_it_stopped(lab: JupyterLab,
                                                          tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    gate = tmp_path / "gate"
    gate.touch()
    (lab.root / "curve.py").write_text(CURVE.replace("GATE", repr(str(gate))))
    (lab.root / "sweep.yml").write_text(SWEEP)
    name = notebook(lab, "sweep.ipynb", "%sweep curve.py --config sweep.yml -o s",
                    "s.wait(120)\ns")
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            run_all_cells(page, lab, name)
            out = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output").last
            table = out.locator(".jc-trials")
            # Live from the controller's first decisions: four trials listed, running.
            table.locator("tbody tr").nth(3).wait_for(timeout=120_000)
            ARTIFACTS.mkdir(exist_ok=True)
            out.screenshot(path=str(ARTIFACTS / "sweep-widget-live-light.png"))
            gate.unlink()  # seen live: the trials go on and the sweep ends
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
            # The ended sweep shown again (the cell's value) stays live to explore: its
            # table and charts, each trial in each chart, fitted to the cell.
            live = page.locator(".jp-Cell").nth(2).locator(".jp-OutputArea-output").last
            live.locator(".jc-trials tbody tr", has_text="Stopped early").first.wait_for(
                timeout=60_000)
            # Two charts side by side, the parameters' chart on a row of its own.
            widths, cell, tops = fitted(live, 3)
            assert tops[0] == tops[1] < tops[2] and widths[2] > 0.9 * cell, (widths, cell)
            follows_the_theme(page, live)
            # Fitting settles: once the charts fit, nothing keeps announcing resizes.
            page.evaluate("""() => { window.jcResizes = 0;
              window.addEventListener("resize", () => window.jcResizes++); }""")
            page.wait_for_timeout(3000)
            assert page.evaluate("() => window.jcResizes") <= 1
            # Every trial in the per-trial chart, the one-point ones too (markers).
            curves = live.locator(".js-plotly-plot").first
            traces = curves.locator(".scatterlayer .trace")
            assert traces.count() == 4
            assert curves.locator(".scatterlayer .trace .points path").count() >= 4 + 2
            assert curves.locator(".legend .traces").count() == 4
            shoot(page, live, "sweep-widget")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "sweep-widget-failure.png"), full_page=True)
            raise
        finally:
            gate.unlink(missing_ok=True)
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
            legend = chart.locator(".legend").text_content() or ""
            assert all(word in legend for word in ("current", "pending", "idle")), legend
            # (each poll redraws the marks: read until one read lands between redraws)
            until(lambda: any(n.startswith("max 2") for n in
                              chart.locator(".annotation").all_text_contents()), 10, "max 2")
            # One chart: it takes the cell's width.
            widths, cell, _tops = fitted(out, 1)
            assert widths[0] > 0.6 * cell, (widths, cell)
            follows_the_theme(page, out)
            page.wait_for_timeout(1500)
            shoot(page, out, "cluster-widget")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "cluster-widget-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
