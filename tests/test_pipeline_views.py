"""The views of a pipeline: the steps' graph (``svgdag``), its static summary, and the
live ``PipelineWidget`` of a real pipeline (its detached controller, real step runs on
the local target) in a real kernel — made static (the graph of that moment) as the
kernel that showed it shuts down, reattached by ``%run_show`` in a new kernel, following
the steps as they move, a click opening a step's run, static once the pipeline ends;
and the summary a terminal's ``show`` prints."""

from __future__ import annotations

import html
import queue
import re
import time
from collections.abc import Callable
from pathlib import Path

from pipelinefiles import write_pipeline

from jupyter_compute.summary import PipelineSummary
from jupyter_compute.svgdag import BOX_H, BOX_W, dag_svg, layout, step_state

from conftest import Project
from kernel import Kernel

WIDGET = "application/vnd.jupyter.widget-view+json"

DIAMOND = [
    {"name": "prep", "status": "Completed", "reused": True, "target": "local",
     "kind": "command", "depends_on": [], "run_id": "r-prep"},
    {"name": "train", "status": "Failed", "target": "docker", "kind": "command",
     "depends_on": ["prep"], "run_id": "r-train", "error": "Traceback…\nValueError: bad lr"},
    {"name": "report", "status": "Completed", "target": "local", "kind": "notebook",
     "depends_on": ["prep"], "run_id": "r-report"},
    {"name": "eval", "status": "Skipped", "target": "local", "kind": "command",
     "depends_on": ["train", "report"], "run_id": None, "reason": "train failed"},
]


def boxes(svg: str) -> dict[str, tuple[float, float, str]]:
    """Each step's box in the drawing: x, y and its state."""
    found = re.findall(r'data-step="([^"]+)" data-run-id="[^"]*" data-state="([^"]+)">'
                       r'<title>[^<]*</title><rect x="([\d.]+)" y="([\d.]+)"', svg)
    return {name: (float(x), float(y), state) for name, state, x, y in found}


def test_steps_flow_left_to_right_and_a_chain_runs_straight() -> None:
    assert layout(DIAMOND) == {"prep": (0, 0), "train": (1, 0), "report": (1, 1),
                               "eval": (2, 0)}
    at = boxes(dag_svg(DIAMOND))
    assert at["prep"][0] < at["train"][0] == at["report"][0] < at["eval"][0]
    # A lone step of a column sits between the two it depends on.
    assert at["train"][1] < at["eval"][1] < at["report"][1]
    assert at["prep"][1] == at["eval"][1]
    chain = [{"name": n, "depends_on": [p] if p else []}
             for n, p in (("a", ""), ("b", "a"), ("c", "b"))]
    assert len({y for _, y, _ in boxes(dag_svg(chain)).values()}) == 1
    # One arrow per dependency; a skipped step's arrows are dashed.
    edges = re.findall(r'<path class="jc-dag-edge"[^>]*>', dag_svg(DIAMOND))
    assert len(edges) == 4 and sum("stroke-dasharray" in e for e in edges) == 2
    assert dag_svg([]) == ""


def test_an_edge_that_skips_a_column_never_crosses_a_box() -> None:
    steps = [*DIAMOND[:3], {**DIAMOND[3], "depends_on": ["prep", "train", "report"]},
             {"name": "deploy", "depends_on": ["eval", "prep"]}]
    svg = dag_svg(steps)
    at = boxes(svg)
    inside = [(x + 1, y + 1, x + BOX_W - 1, y + BOX_H - 1) for x, y, _ in at.values()]
    lanes = [d for d in re.findall(r'class="jc-dag-edge" d="([^"]+)"', svg) if " H" in d]
    assert len(lanes) == 2  # prep → eval and prep → deploy skip a column
    for d in lanes:
        x, y = map(float, re.match(r"M([\d.]+),([\d.]+)", d).groups())
        for op, value in re.findall(r"([HV])([\d.]+)", d):
            nx, ny = (float(value), y) if op == "H" else (x, float(value))
            for left, top, right, bottom in inside:  # no segment enters a box's inside
                assert not (min(x, nx) < right and max(x, nx) > left and
                            min(y, ny) < bottom and max(y, ny) > top), (d, op, value)
            x, y = nx, ny
        assert (x, y) in {(at[n][0] - 1, at[n][1] + BOX_H / 2) for n in ("eval", "deploy")}


def test_each_state_has_its_own_look() -> None:
    svg = dag_svg(DIAMOND, selected="train")
    states = {name: state for name, (_, _, state) in boxes(svg).items()}
    assert states == {"prep": "Reused", "train": "Failed", "report": "Completed",
                      "eval": "Skipped"}
    assert ">Reused · local</text>" in svg and ">Failed · docker</text>" in svg
    assert 'stroke-width="3"' in svg  # the selected step is outlined
    assert step_state({"status": None}) == "NotStarted"
    assert ">Not started · local</text>" in dag_svg([{"name": "x", "target": "local"}])
    # Names are escaped, long ones shortened in the box but whole in the tooltip.
    odd = dag_svg([{"name": "<b>" + "x" * 40, "status": "Running"}])
    assert "<b>x" not in odd and "&lt;b&gt;" + "x" * 40 in odd and "…</text>" in odd


def test_summary_reads_in_a_terminal_and_in_a_saved_notebook() -> None:
    state = {"id": "p-1", "name": "etl", "status": "Failed", "error": "step train failed",
             "started": "2026-12-07T06:00:00+00:00", "ended": "2026-12-07T06:01:05+00:00",
             "steps": DIAMOND}
    s = PipelineSummary(state)
    text = s.text()
    assert text.splitlines()[0] == "Pipeline p-1 · etl · Failed · 1m05s"
    assert "4 steps: 1 completed · 1 reused · 1 failed · 1 skipped" in text
    assert re.search(r"train +Failed +command on docker +r-train +after prep · "
                     r"ValueError: bad lr", text)
    assert re.search(r"eval +Skipped .* - +after train, report · train failed", text)
    html = s.html()
    assert html.count('class="jc-dag-step"') == 4 and WIDGET not in html
    assert PipelineSummary({"id": "p-2", "status": "Queued"}).counts() == "no steps yet"
    assert "step train failed" in html and "ValueError: bad lr" in html


def iopub_until(kernel: Kernel, kind: str, timeout: float = 30,
                when: Callable[[dict], bool] = lambda m: True) -> list[dict]:
    """Every IOPub message, from any cell, up to the first of ``kind`` that is ``when``."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            msg = kernel.kc.get_iopub_msg(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(msg)
        if msg["msg_type"] == kind and when(msg):
            return seen
    raise AssertionError(f"no {kind} in {[m['msg_type'] for m in seen]}")


def states(pipeline_id: str, root: Path) -> dict[str, str]:
    from jupyter_compute.pipeline import Pipeline

    return {s["name"]: step_state(s) for s in Pipeline.get(pipeline_id, root).steps()}


def until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_run_show_reattaches_after_a_restart_and_ends_static(project: Project) -> None:
    release = write_pipeline(project.root)
    first = Kernel(project.root)
    try:
        assert first.run("%load_ext jupyter_compute").status == "ok"
        started = first.run("from jupyter_compute.pipeline import submit_file\n"
                            "p = submit_file('pipeline.yml')\nprint(p.id)\np")
        assert started.status == "ok", started.error_text
        assert WIDGET in started.data[-1]  # shown live
        pipeline_id = started.stdout.strip()
        until(lambda: states(pipeline_id, project.root)["train"] == "Running", 60,
              "train to run")
        # The kernel is shut down: before it replies, its live view becomes the static
        # graph of the moment (train still running); the pipeline goes on.
        first.kc.shutdown()
        seen = iopub_until(first, "shutdown_reply", timeout=60)
        updates = [m["content"]["data"] for m in seen if m["msg_type"] == "update_display_data"]
        assert len(updates) == 1 and set(updates[0]) == {"text/plain", "text/html"}, updates
        assert boxes(updates[0]["text/html"])["train"][2] == "Running"
        first.km.finish_shutdown()
    finally:
        first.shutdown()

    k = Kernel(project.root)
    try:
        assert k.run("%load_ext jupyter_compute").status == "ok"
        until(lambda: states(pipeline_id, project.root)["report"] == "Skipped", 60,
              "the failed check to skip the report")
        shown = k.run(f"%run_show {pipeline_id}")
        assert shown.status == "ok", shown.error_text
        assert WIDGET in shown.data[-1]  # live again, in a new kernel
        views = "__import__('jupyter_compute.widgets.live').widgets.live.live_views()"
        assert k.value(f"type({views}[0]).__name__") == "PipelineWidget"
        k.run(f"w = {views}[0]")
        drawn = {name: state for name, (_, _, state) in
                 boxes(k.value("w.graph.svg")).items()}
        assert drawn == {"prep": "Completed", "train": "Running", "check": "Failed",
                         "report": "Skipped", "eval": "NotStarted"}, drawn

        # A click on a step opens its run below the graph.
        k.run("w.graph.selected = 'check'")
        assert k.value("type(w.detail.children[-1]).__name__") == "RunWidget"
        check_run = k.value("w.detail.children[-1].run.id")
        assert check_run == k.value("[s['run_id'] for s in w.steps if s['name'] == 'check'][0]")

        # Released, train and eval end; the output becomes the static final graph.
        display_id = k.value("w.display_handle.display_id")
        release.touch()
        seen = iopub_until(k, "update_display_data", timeout=120, when=lambda m: m[
            "content"]["transient"]["display_id"] == display_id)
        final = seen[-1]["content"]["data"]
        assert set(final) == {"text/plain", "text/html"}  # static: no widget view left
        assert boxes(final["text/html"])["eval"][2] == "Completed"
        assert "5 steps: 3 completed · 1 failed · 1 skipped" in final["text/plain"]
        assert "step 'check' Failed" in html.unescape(final["text/html"])  # why report skipped

        # Run again unchanged: what completed is reused, the failed check runs again.
        again = k.run("from jupyter_compute.pipeline import submit_file\n"
                      "q = submit_file('pipeline.yml'); q.wait(120); print(q.id)")
        assert again.status == "ok", again.error_text
        rerun = again.stdout.strip().splitlines()[-1]
        assert states(rerun, project.root) == {
            "prep": "Reused", "train": "Reused", "check": "Failed", "report": "Skipped",
            "eval": "Reused"}
        shown = project.cli("show", rerun)  # a terminal's view: the same summary, as text
        assert shown.returncode == 0, shown.stderr
        assert "5 steps: 3 reused · 1 failed · 1 skipped" in shown.stdout
        assert re.search(r"train +Reused +command on local +\S+-train-\S+ +after prep",
                         shown.stdout)
    finally:
        k.shutdown()


def test_the_cancel_button_cancels_the_running_steps_and_skips_the_rest(
        project: Project, kernel: Kernel) -> None:
    release = write_pipeline(project.root)
    try:
        shown = kernel.run("from jupyter_compute.pipeline import submit_file\n"
                           "p = submit_file('pipeline.yml')\np")
        assert shown.status == "ok" and WIDGET in shown.data[-1], shown.error_text
        pipeline_id = kernel.value("p.id")
        until(lambda: states(pipeline_id, project.root)["train"] == "Running", 60,
              "train to run")
        views = "__import__('jupyter_compute.widgets.live').widgets.live.live_views()"
        kernel.run(f"w = {views}[0]; w.cancel_button.click()")
        assert kernel.value("w.cancel_button.description") == "Canceling…"
        display_id = kernel.value("w.display_handle.display_id")
        seen = iopub_until(kernel, "update_display_data", timeout=60, when=lambda m: m[
            "content"]["transient"]["display_id"] == display_id)
        final = seen[-1]["content"]["data"]
        drawn = {name: state for name, (_, _, state) in boxes(final["text/html"]).items()}
        assert drawn["train"] == "Canceled" and drawn["eval"] == "Skipped", drawn
        assert final["text/plain"].startswith(f"Pipeline {pipeline_id} · pipeline · Canceled")
    finally:
        release.touch()
