"""The Compute sidebar in JupyterLab, in headless Chromium (Debian's, driven by Playwright
— no browser download): a target and a running run are listed, the run turns Completed
without a reload, Cancel from the panel ends another run (its process is gone), a log
tab shows the run's lines, and the attach form shows the server's refusal inline.
A run's page (a click on it) shows its params, tags, git, metric charts and outputs,
previews and downloads them, and cancels a live run; a sweep's trials nest under it and
the filter finds runs by tag. Screenshots, light and dark, go to tests/artifacts/."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_compute import api
from jupyter_compute.runs import Run

from conftest import pid_alive
from labserver import JupyterLab, launch_chromium, set_theme

ARTIFACTS = Path(__file__).parent / "artifacts"
TIMEOUT = 60_000


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    root = tmp_path_factory.mktemp("sidebar-root")
    (root / ".jupyter_compute").mkdir()
    server = JupyterLab(root, tmp_path_factory.mktemp("sidebar-state")).start()
    yield server
    server.stop()


def submit(root: Path, name: str, source: str) -> str:
    script = root / f"{name}.py"
    script.write_text(textwrap.dedent(source))
    return api.submit(script, target="local", name=name, source_dir=root, workspace=root).id


def badge(page: Any, run_id: str) -> Any:
    return page.locator(f'.jp-Compute-run[data-run-id="{run_id}"] .jp-Compute-badge')


def wait_text(locator: Any, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if locator.count() and text in locator.first.inner_text():
            return
        time.sleep(0.2)
    raise AssertionError(f"never saw {text!r}; last: "
                         f"{locator.first.inner_text() if locator.count() else 'nothing'}")


def test_compute_sidebar(lab: JupyterLab) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        victim = None
        try:
            page.goto(f"{lab.base}/lab?reset&token={lab.token}")
            page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=TIMEOUT)
            set_theme(page, "light")
            page.locator('.jp-SideBar [data-id="jupyter-compute-panel"]').click()
            page.locator('.jp-Compute-target[data-target="local"]').wait_for(timeout=TIMEOUT)
            assert "ready" in page.locator('.jp-Compute-target[data-target="local"]').inner_text()

            # Submitted while the panel is open: they show up without a reload.
            finisher = submit(lab.root, "finisher", """\
                import time
                from jupyter_compute.tracking import get_run
                run = get_run()
                for i in range(24):
                    print(f'finisher line {i}', flush=True)
                    run.log('accuracy', i / 24, step=i)
                    time.sleep(0.5)
                """)
            victim = submit(lab.root, "victim", """\
                import os, time
                print(f'pid {os.getpid()}', flush=True)
                time.sleep(600)
                """)
            wait_text(badge(page, finisher), "Running")
            wait_text(badge(page, victim), "Running")
            wait_text(page.locator(f'[data-run-id="{finisher}"] .jp-Compute-metric'),
                      "accuracy")
            # Newest first.
            ids = page.locator(".jp-Compute-run").evaluate_all(
                "rows => rows.map(r => r.dataset.runId)")
            assert ids[:2] == [victim, finisher]
            page.screenshot(path=str(ARTIFACTS / "sidebar-light.png"))

            # The attach form shows the server's refusal inline, then attaches.
            page.get_by_role("button", name="Attach target").click()
            form = page.locator(".jp-Compute-attach")
            form.locator('input[name="name"]').fill("bad name!")
            form.locator('select[name="kind"]').select_option("local")
            form.get_by_role("button", name="Attach").click()
            wait_text(form.locator(".jp-Compute-formError"), "invalid target name")
            form.locator('input[name="name"]').fill("box")
            form.get_by_role("button", name="Attach").click()
            page.locator('.jp-Compute-target[data-target="box"]').wait_for(timeout=TIMEOUT)
            assert "box" in api.targets(lab.root)

            # Cancel from the panel: Canceled, and the script's process is gone.
            log = api.runs(workspace=lab.root)
            pid = next(int(r.log().split()[1]) for r in log if r.id == victim)
            page.locator(f'[data-run-id="{victim}"]').get_by_role(
                "button", name="Cancel").click()
            wait_text(badge(page, victim), "Canceled")
            deadline = time.monotonic() + 10
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not pid_alive(pid), "the canceled run's process is still alive"
            victim = None

            # The log tab tails while the run is going, then stops at the end.
            page.locator(f'[data-run-id="{finisher}"]').get_by_role(
                "button", name="Log").click()
            text = page.locator(".jp-Compute-log .jp-Compute-logText")
            wait_text(text, "finisher line 0")
            wait_text(badge(page, finisher), "Completed")
            wait_text(page.locator(".jp-Compute-log .jp-Compute-logNote"), "Log complete")
            lines = [ln for ln in text.inner_text().splitlines() if ln.startswith("finisher")]
            assert lines == [f"finisher line {i}" for i in range(24)]
            page.screenshot(path=str(ARTIFACTS / "sidebar-log-light.png"))

            # Dark theme: the same panel through JupyterLab's theme variables.
            set_theme(page, "dark")
            page.screenshot(path=str(ARTIFACTS / "sidebar-dark.png"))

            # A server restart: the panel says it lost the server, then reconnects.
            banner = page.locator(".jp-Compute-banner")
            lab.stop()
            wait_text(banner, "Lost the server")
            lab.start()
            wait_text(banner, "Reconnected")
            wait_text(badge(page, finisher), "Completed")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "sidebar-failure.png"), full_page=True)
            raise
        finally:
            if victim is not None:
                api.runs(workspace=lab.root)[0].cancel()
            browser.close()


def test_a_run_from_a_notebook_cell_appears_within_3_s(lab: JupyterLab) -> None:
    """%%submit in a notebook, with the sidebar open: the run is listed within 3 s."""
    import nbformat
    from playwright.sync_api import sync_playwright

    from labserver import run_all_cells

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext jupyter_compute"),
                nbformat.v4.new_code_cell("%%submit --name from-a-cell\nimport time\n"
                                          "print('cell run', flush=True)\ntime.sleep(4)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, lab.root / "cell.ipynb")
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        try:
            run_all_cells(page, lab, "cell.ipynb")
            page.locator('.jp-SideBar [data-id="jupyter-compute-panel"]').click()
            # The cell's widget shows the run once %%submit has returned: the clock starts.
            page.locator(".jupyter-widgets", has_text="from-a-cell").first.wait_for(
                timeout=TIMEOUT)
            started = time.monotonic()
            listed = page.locator(".jp-Compute-run", has_text="from-a-cell")
            listed.first.wait_for(timeout=TIMEOUT)
            assert time.monotonic() - started <= 3.0
            wait_text(listed.locator(".jp-Compute-badge"), "Completed")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "sidebar-cell-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def project_with_train(root: Path) -> Path:
    """A clean git repository holding notebooks/train.py (it tags model=…)."""
    import shutil
    import subprocess

    project = root / "project"
    project.mkdir()
    shutil.copy(Path(__file__).parents[1] / "notebooks" / "train.py", project / "train.py")
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "train"]):
        subprocess.run(["git", *cmd], cwd=project, check=True)
    return project


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain PNG of one colour (no imaging library needed)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_the_run_page(lab: JupyterLab) -> None:
    """A sweep of train.py: its trials nest under it in the sidebar, the search finds
    runs by tag, and a trial's page shows its params, tags, git, metric charts and
    outputs, previews model.json and downloads it byte for byte."""
    from playwright.sync_api import sync_playwright

    from jupyter_compute.sweep import SweepConfig, choice, sweep

    project = project_with_train(lab.root)
    config = SweepConfig(parameter_space={"--lr": choice(0.1, 0.5)}, sampling="grid",
                         primary_metric_name="accuracy", primary_metric_goal="maximize")
    s = sweep("train.py", config, target="local", name="lr-sweep",
              arguments=["--epochs", "6"], source_dir=project, workspace=lab.root)
    assert s.wait(timeout=120).value == "Completed", s.log()
    long_name = "a-rather-long-run-name-that-would-never-fit-on-one-line-of-the-sidebar"
    long_run = api.submit(project / "train.py", target="local", name=long_name,
                          source_dir=project, workspace=lab.root)
    assert long_run.wait(timeout=60).value == "Completed", long_run.log()
    trials = sorted(s.trials(), key=lambda t: t["index"])
    trial = next(t for t in trials if t["params"] == {"--lr": 0.5})
    run = Run.get(trial["run_id"], lab.root)
    model = run.target.outputs_dir(run.id) / "model.json"
    sleeper = None

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1300}, accept_downloads=True)
        try:
            page.goto(f"{lab.base}/lab?reset&token={lab.token}")
            page.wait_for_selector("#jupyterlab-splash", state="detached", timeout=TIMEOUT)
            set_theme(page, "light")
            page.locator('.jp-SideBar [data-id="jupyter-compute-panel"]').click()
            sweep_row = page.locator(f'.jp-Compute-run[data-run-id="{s.id}"]')
            sweep_row.wait_for(timeout=TIMEOUT)
            # The workspace path keeps its leading "/" (it reads left to right).
            workspace = page.locator(".jp-Compute-workspace")
            assert workspace.inner_text().startswith("/"), workspace.inner_text()
            assert workspace.evaluate("e => e.scrollWidth <= e.clientWidth")
            # Names are never cut off: they wrap.
            page.locator(f'.jp-Compute-run[data-run-id="{long_run.id}"]').wait_for(
                timeout=TIMEOUT)
            cut = page.locator(".jp-Compute-run .jp-Compute-name").evaluate_all(
                "names => names.filter(n => n.scrollWidth > n.clientWidth)"
                ".map(n => n.textContent)")
            assert cut == [], cut

            # The trials come right after their sweep, indented, oldest first.
            ids = page.locator(".jp-Compute-run").evaluate_all(
                "rows => rows.map(r => [r.dataset.runId, r.classList.contains("
                "'jp-Compute-child')])")
            at = ids.index([s.id, False])
            assert ids[at + 1:at + 3] == [[t["run_id"], True] for t in trials], ids
            # Collapsed, they go; opened again, they are back.
            sweep_row.locator(".jp-Compute-toggle").click()
            page.locator(f'.jp-Compute-run[data-run-id="{trial["run_id"]}"]').wait_for(
                state="detached", timeout=TIMEOUT)
            sweep_row.locator(".jp-Compute-toggle").click()

            # Search: by a tag, and a word that matches nothing.
            search = page.locator(".jp-Compute-search")
            search.fill("model=logistic")
            shown = page.locator(".jp-Compute-run").evaluate_all(
                "rows => rows.map(r => r.dataset.runId)")
            assert set(shown) == {s.id, long_run.id, *(t["run_id"] for t in trials)}, shown
            search.fill("no-such-run-anywhere")
            wait_text(page.locator(".jp-Compute-empty"), "No run matches")
            search.fill("")
            page.screenshot(path=str(ARTIFACTS / "sidebar-nested-light.png"))
            search.fill("lr-sweep")

            # The trial's page, from a click on its row.
            page.locator(f'.jp-Compute-run[data-run-id="{trial["run_id"]}"] '
                         ".jp-Compute-open").click()
            overview = page.locator(".jp-Compute-runPage:visible")
            wait_text(overview.locator('[data-role="status"]'), "Completed")
            params = overview.locator('[data-section="arguments"]')
            wait_text(params, "--lr")
            assert "0.5" in params.locator(".jp-Compute-params").inner_text()
            assert "model=logistic-regression" in params.locator(".jp-Compute-tags").inner_text()
            assert "--epochs 6" in params.locator(".jp-Compute-command").inner_text()
            git = overview.locator('[data-section="git"]').inner_text()
            assert run.record.git["commit"][:10] in git and "main" in git and "clean" in git
            # Metric charts: one per metric, drawn by plotly, steps 1..6 as whole numbers.
            chart = overview.locator('.jp-Compute-chart[data-metric="accuracy"]')
            chart.locator(".main-svg").first.wait_for(timeout=TIMEOUT)
            ticks = chart.locator(".xtick text").all_text_contents()
            assert ticks and all(t.isdigit() for t in ticks), ticks
            assert chart.locator(".legend").count() == 1
            assert overview.locator('.jp-Compute-chart[data-metric="loss"]').count() == 1
            # Outputs: listed with a size, previewed, downloaded.
            row = overview.locator('[data-output="model.json"]')
            wait_text(row, "model.json")
            row.get_by_role("button", name="Preview").click()
            wait_text(overview.locator(".jp-Compute-preview pre"), '"lr": 0.5')
            page.screenshot(path=str(ARTIFACTS / "runpage-light.png"), full_page=True)
            with page.expect_download() as info:
                row.get_by_role("link", name="Download").click()
            download = info.value
            assert download.suggested_filename == "model.json"
            assert Path(download.path()).read_bytes() == model.read_bytes()
            # Snapshot files: what was sent.
            files = overview.locator('[data-section="snapshot-files"]')
            files.locator("summary").click()
            wait_text(files, "train.py")
            # An ended run offers no Cancel.
            assert overview.get_by_role("button", name="Cancel").count() == 0

            # The Log tab reuses the log view.
            page.locator(".jp-Compute-runTabs .lm-TabBar-tab", has_text="Log").click()
            wait_text(page.locator(".jp-Compute-runTabs .jp-Compute-logText:visible"),
                      "saved outputs/model.json")
            page.locator(".jp-Compute-runTabs .lm-TabBar-tab", has_text="Overview").click()

            # The sweep's page (from the trial's "part of sweep" link): a trials table
            # and one line per trial, with a legend.
            header = overview.locator(".jp-Compute-pageHeader")
            assert "part of sweep lr-sweep" in header.inner_text()
            header.get_by_role("button", name="lr-sweep").click()
            sweep_page = page.locator(".jp-Compute-runPage:visible")
            wait_text(sweep_page.locator('[data-section="trials"]'), "trial 1")
            assert "choice(0.1, 0.5)" in sweep_page.locator(".jp-Compute-params").inner_text()
            assert "Maximize accuracy" in sweep_page.locator('[data-section="sweep"]').inner_text()
            sweep_chart = sweep_page.locator(".jp-Compute-chart")
            sweep_chart.locator(".main-svg").first.wait_for(timeout=TIMEOUT)
            sweep_chart.locator(".legend .traces").nth(1).wait_for(timeout=TIMEOUT)
            legend = sweep_chart.locator(".legend").first.text_content() or ""
            assert legend == "".join(f"trial {t['index']}" for t in trials), legend
            page.screenshot(path=str(ARTIFACTS / "runpage-sweep-light.png"), full_page=True)

            # Dark theme: the same pages through the theme's variables.
            set_theme(page, "dark")
            page.screenshot(path=str(ARTIFACTS / "runpage-sweep-dark.png"), full_page=True)
            page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab",
                         has_text=f"Run: {run.name}").click()
            time.sleep(1)
            page.screenshot(path=str(ARTIFACTS / "runpage-dark.png"), full_page=True)
            search.fill("")
            page.screenshot(path=str(ARTIFACTS / "sidebar-nested-dark.png"))

            # A running run's page: outputs show up while it runs, an image previews,
            # and Cancel ends it (then Cancel is gone).
            import nbformat

            (project / "curve.png").write_bytes(png(60, 30, (220, 40, 40)))
            report = nbformat.v4.new_notebook()
            report.cells = [nbformat.v4.new_markdown_cell("# Report of the run"),
                            nbformat.v4.new_code_cell("print('the best lr is 0.5')", outputs=[
                                nbformat.v4.new_output("stream", text="the best lr is 0.5\n")])]
            nbformat.write(report, project / "report.ipynb")
            (project / "sleeper.py").write_text(textwrap.dedent("""\
                import shutil, time
                from jupyter_compute.tracking import get_run
                shutil.copy('curve.png', get_run().outputs_dir)
                shutil.copy('report.ipynb', get_run().outputs_dir)
                print('sleeping', flush=True)
                time.sleep(600)
                """))
            sleeper = api.submit(project / "sleeper.py", target="local", source_dir=project,
                                 workspace=lab.root).id
            page.locator(f'.jp-Compute-run[data-run-id="{sleeper}"] .jp-Compute-open').click()
            live = page.locator(".jp-Compute-runPage:visible")
            wait_text(live.locator('[data-role="status"]'), "Running")
            image = live.locator('[data-output="curve.png"]')
            wait_text(image, "curve.png")
            image.get_by_role("button", name="Preview").click()
            shown = live.locator(".jp-Compute-preview img")
            shown.wait_for(timeout=TIMEOUT)
            page.wait_for_function("img => img.complete && img.naturalWidth === 60",
                                   arg=shown.element_handle(), timeout=TIMEOUT)
            page.screenshot(path=str(ARTIFACTS / "runpage-running-dark.png"), full_page=True)
            # A notebook output: rendered by the server, shown read-only.
            live.locator('[data-output="report.ipynb"]').get_by_role(
                "button", name="Preview").click()
            rendered = page.frame_locator(".jp-Compute-preview iframe").locator("body")
            wait_text(rendered, "the best lr is 0.5")
            assert "Report of the run" in rendered.inner_text()
            page.screenshot(path=str(ARTIFACTS / "runpage-notebook-dark.png"), full_page=True)
            live.get_by_role("button", name="Cancel").click()
            wait_text(live.locator('[data-role="status"]'), "Canceled")
            assert live.get_by_role("button", name="Cancel").count() == 0
            wait_text(badge(page, sleeper), "Canceled")
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "runpage-failure.png"), full_page=True)
            raise
        finally:
            if sleeper:
                Run.get(sleeper, lab.root).cancel()  # whatever failed, no sleeper stays
            browser.close()
