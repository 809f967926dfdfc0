"""A pipeline as a person sees it in JupyterLab (headless Chromium, Debian's, via
Playwright), from a real pipeline (its detached controller, real step runs on local):

* in a notebook, the live ``PipelineWidget``: the steps' graph in their states while
  one step still runs, a click on a step opening its run below; when the pipeline
  ends, the output becomes the static graph, which a saved notebook reopened after its
  kernel went away still shows (never "Error displaying widget", no widget view in
  the file); run again and restarted without a reload, the live view becomes static;
* in the sidebar, the steps nested under their pipeline, the pipeline's row with its
  steps' states, and its page with the graph, where a click on a step opens its run.

Screenshots, light and dark, go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from pipelinefiles import write_pipeline

from labserver import JupyterLab, launch_chromium, run_all_cells, set_theme

ARTIFACTS = Path(__file__).parent / "artifacts"
WIDGET = "application/vnd.jupyter.widget-view+json"
TIMEOUT = 60_000
FINAL = {"prep": "Completed", "train": "Completed", "check": "Failed", "report": "Skipped",
         "eval": "Completed"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    root = tmp_path_factory.mktemp("pipeline-lab")
    (root / ".jupyter_compute").mkdir()
    server = JupyterLab(root, tmp_path_factory.mktemp("pipeline-lab-state")).start()
    yield server
    server.stop()


def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def drawn_states(scope: Any) -> dict[str, str]:
    """Each step's state as the graph in ``scope`` draws it."""
    return dict(scope.locator(".jc-dag-step").evaluate_all(
        "gs => gs.map(g => [g.dataset.step, g.dataset.state])"))


def shoot(page: Any, element: Any, name: str) -> None:
    """``name``-light.png and ``name``-dark.png of ``element``."""
    ARTIFACTS.mkdir(exist_ok=True)
    for theme in ("light", "dark"):
        set_theme(page, theme)
        element.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"{name}-{theme}.png"), clip=element.bounding_box())
    set_theme(page, "light")


def saved_widget_outputs(path: Path) -> list[dict]:
    nb = json.loads(path.read_text())
    return [o for c in nb["cells"] for o in c.get("outputs", []) if WIDGET in o.get("data", {})]


def test_pipeline_widget_live_then_static_after_reopening(
        lab: JupyterLab, request: pytest.FixtureRequest) -> None:
    from playwright.sync_api import sync_playwright

    release = write_pipeline(lab.root)
    # Whatever fails, no held step is left running after the test.
    request.addfinalizer(lambda: [(lab.root / name).touch()
                                  for name in ("release-train", "release-again")])
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (
        "%load_ext jupyter_compute",
        "from jupyter_compute.pipeline import submit_file\n"
        "p = submit_file('pipeline.yml', name='etl')\np")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, lab.root / "pipeline.ipynb")
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            run_all_cells(page, lab, "pipeline.ipynb")
            out = page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea-output").last
            graph = out.locator(".jc-dag-view")
            # Live: train still runs, the check failed, so report is skipped.
            until(lambda: drawn_states(graph) == {**FINAL, "train": "Running",
                                                  "eval": "NotStarted"}, 90,
                  "the live graph to show every state")
            assert "5 steps:" in out.inner_text() and "1 failed" in out.inner_text()
            # A click on a step opens its run below the graph.
            graph.locator('.jc-dag-step[data-step="prep"]').click()
            out.locator(".jc-log pre", has_text="prepared").wait_for(timeout=TIMEOUT)
            assert graph.locator('.jc-dag-selected[data-step="prep"]').count() == 1
            time.sleep(1)  # the run widget's charts and header settle
            shoot(page, out, "pipeline-widget")

            # Released: the pipeline ends and its output becomes the static graph.
            release.touch()
            static = page.locator(".jp-Cell").nth(1).locator(".jupyter-compute-pipeline")
            static.wait_for(timeout=120_000)
            until(lambda: drawn_states(static) == FINAL, 10, "the final graph")
            page.locator(".jp-Notebook").first.click()
            page.keyboard.press("Control+s")
            until(lambda: not saved_widget_outputs(lab.root / "pipeline.ipynb")
                  and "jupyter-compute-pipeline" in (lab.root / "pipeline.ipynb").read_text(),
                  30, "the saved notebook to hold the static graph")
            page.get_by_role("menuitem", name="Kernel", exact=True).click()
            page.get_by_text("Shut Down Kernel", exact=True).click()
            time.sleep(1)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "pipeline-widget-failure.png"), full_page=True)
            raise

        # Reopened in a new page, with no kernel of the old one: the final graph shows.
        again = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            again.goto(lab.url("pipeline.ipynb"))
            again.wait_for_selector("#jupyterlab-splash", state="detached", timeout=TIMEOUT)
            summary = again.locator(".jupyter-compute-pipeline")
            summary.wait_for(timeout=TIMEOUT)
            time.sleep(2)  # the widget manager would say "model not found" by now
            assert "Error displaying widget" not in again.content()
            assert drawn_states(summary) == FINAL
            text = summary.inner_text()
            assert "5 steps: 3 completed · 1 failed · 1 skipped" in text
            assert "step 'check' Failed" in text  # why report was skipped
            # The graph fits: no box is cut off, nothing overflows the output sideways.
            box = summary.locator("svg.jc-dag").bounding_box()
            area = again.locator(".jp-OutputArea-output", has=summary).bounding_box()
            assert box["x"] >= area["x"] and box["x"] + box["width"] <= area["x"] + area["width"]
            shoot(again, summary, "pipeline-summary")

            # Run again (train held by a new release file, so it reruns), then restart the
            # kernel without a reload: JupyterLab drops the old kernel's messages, so the
            # extension makes the live view static (the summary it carries).
            write_pipeline(lab.root, "release-again")
            again.locator(".jp-StatusBar-TextItem", has_text="Idle").first.wait_for(
                timeout=TIMEOUT)
            again.get_by_role("menuitem", name="Run", exact=True).click()
            again.get_by_text("Run All Cells", exact=True).click()
            live = again.locator(".jp-Cell").nth(1).locator(".jc-dag-view")
            until(lambda: live.count() and drawn_states(live).get("train") == "Running", 90,
                  "the second run's live graph")
            again.get_by_role("menuitem", name="Kernel", exact=True).click()
            again.get_by_text("Restart Kernel…", exact=True).click()
            again.locator(".jp-Dialog").get_by_role(
                "button", name="Confirm Kernel Restart", exact=True).click()
            restarted = again.locator(".jp-Cell").nth(1).locator(".jupyter-compute-pipeline")
            restarted.wait_for(timeout=30_000)
            assert again.locator(".jc-dag-view").count() == 0
            assert again.locator(".jupyter-widgets-disconnected").count() == 0
            again.locator(".jp-Notebook").first.click()
            again.keyboard.press("Control+s")
            until(lambda: not saved_widget_outputs(lab.root / "pipeline.ipynb"), 30,
                  "no widget view left in the saved notebook after the restart")
        except Exception:
            again.screenshot(path=str(ARTIFACTS / "pipeline-summary-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def test_sidebar_nests_steps_and_the_page_draws_the_graph(lab: JupyterLab) -> None:
    from playwright.sync_api import sync_playwright

    from jupyter_compute.pipeline import submit_file

    release = write_pipeline(lab.root)
    release.touch()  # nothing held: these pipelines run straight through
    first = submit_file(lab.root / "pipeline.yml", name="nightly", reuse=False,
                        workspace=lab.root)
    assert first.wait(120).value == "Failed"  # its check step fails
    # Run again: what completed is reused, the check runs (and fails) again.
    pipe = submit_file(lab.root / "pipeline.yml", name="nightly", workspace=lab.root)
    assert pipe.wait(120).value == "Failed"
    steps = {s["name"]: s for s in pipe.steps()}
    final = {**FINAL, "prep": "Reused", "train": "Reused", "eval": "Reused"}
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{lab.base}/lab?reset&token={lab.token}")
            page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=TIMEOUT)
            set_theme(page, "light")
            page.locator('.jp-SideBar [data-id="jupyter-compute-panel"]').click()
            row = page.locator(f'.jp-Compute-run[data-run-id="{pipe.id}"]')
            row.wait_for(timeout=TIMEOUT)
            page.locator(f'.jp-Compute-run[data-run-id="{first.id}"]').wait_for(
                timeout=TIMEOUT)
            # The steps each pipeline ran come right after it, indented (a reused step's
            # run stays under the pipeline that ran it).
            ids = page.locator(".jp-Compute-run").evaluate_all(
                "rows => rows.map(r => [r.dataset.runId, r.classList.contains("
                "'jp-Compute-child')])")
            for parent, count in ((first, 4), (pipe, 1)):
                at = ids.index([parent.id, False])
                ran = {child.id for child in parent.children()}
                assert len(ran) == count
                assert {i for i, child in ids[at + 1:at + 1 + count] if child} == ran, ids
            assert row.locator(".jp-Compute-toggle").get_attribute("title") == \
                "Hide its 1 step"
            # Its row: a mark per step in its state, and how many are done.
            marks = row.locator(".jp-Compute-stepMark").evaluate_all(
                "ms => ms.map(m => m.title)")
            assert marks == [f"{name}: {state}" for name, state in final.items()], marks
            assert "3/5 steps done" in row.inner_text()

            # Its page: the graph in the final states, a table saying why report skipped.
            row.locator(".jp-Compute-open").click()
            overview = page.locator(".jp-Compute-runPage:visible")
            card = overview.locator('[data-section="steps"]')
            card.locator(".jc-dag-step").first.wait_for(timeout=TIMEOUT)
            assert drawn_states(card) == final
            assert "step 'check' Failed" in card.locator('tr[data-step="report"]').inner_text()
            set_theme(page, "dark")
            page.screenshot(path=str(ARTIFACTS / "runpage-pipeline-dark.png"), full_page=True)
            set_theme(page, "light")
            page.screenshot(path=str(ARTIFACTS / "runpage-pipeline-light.png"), full_page=True)
            # A click on a step's box opens that step's run.
            card.locator('.jc-dag-step[data-step="check"]').click()
            step_page = page.locator(".jp-Compute-runPage:visible")
            until(lambda: steps["check"]["run_id"] in step_page.locator(
                ".jp-Compute-pageId").inner_text(), 30, "the check step's page")
            assert "part of pipeline nightly" in step_page.locator(
                ".jp-Compute-pageHeader").inner_text()
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "runpage-pipeline-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
