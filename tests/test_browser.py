"""JupyterLab in headless Chromium (Debian's, driven by Playwright — no browser download):
``%%submit`` shows log lines while the run is still Running, and a metric chart with points."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from labserver import JupyterLab, launch_chromium, run_all_cells

ARTIFACTS = Path(__file__).parent / "artifacts"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    root = tmp_path_factory.mktemp("lab-root")
    (root / ".jupyter_compute").mkdir()
    server = JupyterLab(root, tmp_path_factory.mktemp("lab-state")).start()
    yield server
    server.stop()


def test_widget_streams_in_jupyterlab(lab: JupyterLab) -> None:
    from playwright.sync_api import sync_playwright

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_compute"),
        nbformat.v4.new_code_cell(
            "%%submit --name browser\n"
            "import time\nfrom jupyter_compute.tracking import get_run\nrun = get_run()\n"
            "for i in range(60):\n"
            "    print(f'browser line {i}', flush=True)\n"
            "    run.log('loss', 1 / (i + 1), step=i)\n"
            "    time.sleep(0.25)\n"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, lab.root / "browser.ipynb")
    ARTIFACTS.mkdir(exist_ok=True)

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            run_all_cells(page, lab, "browser.ipynb")
            log = page.locator(".jupyter-widgets pre", has_text="browser line 3")
            log.wait_for(timeout=60_000)
            # Lines arrive while the run is still going: the badge still says Running.
            assert page.locator(".jupyter-widgets", has_text="Running").count() > 0
            points = page.locator(".jupyter-widgets .scatterlayer .trace path")
            deadline = time.monotonic() + 60
            while points.count() == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert points.count() > 0, "the loss chart has no points"
            time.sleep(1)
            page.screenshot(path=str(ARTIFACTS / "browser-run-widget.png"), full_page=True)
            assert "Running" in page.locator(".jupyter-widgets").first.inner_text()
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
