"""The views of a pipeline: the steps' graph (``svgdag``), its static summary, and the
live ``PipelineWidget`` in a real kernel — shown by ``%run_show``, following the steps
as they move, a click opening a step's run, and static once the pipeline ends."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Callable

from pipeline_standin import HERE, DrivenPipeline

from jupyter_compute.summary import PipelineSummary
from jupyter_compute.svgdag import dag_svg, layout, step_state

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
    assert re.search(r"train +Failed +command on docker +prep +r-train +ValueError: bad lr",
                     text)
    assert re.search(r"eval +Skipped .* train, report +- +train failed", text)
    html = s.html()
    assert html.count('class="jc-dag-step"') == 4 and WIDGET not in html
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


def test_run_show_follows_the_steps_and_ends_static(project: Project,
                                                     kernel: Kernel) -> None:
    from jupyter_compute.workspace import Workspace

    project.write("prep.py", "print('prepared')\n")
    project.write("train.py", "import time\nprint('training', flush=True)\ntime.sleep(1)\n"
                              "print('trained')\n")
    ws = Workspace(project.root)
    pipe = DrivenPipeline(ws, "etl", [
        {"name": "prep"}, {"name": "train", "depends_on": ["prep"]},
        {"name": "eval", "depends_on": ["train"]}])
    prep = pipe.submit("prep", "prep.py")
    prep.wait(60)
    pipe.step("prep", status="Completed", reused=True)  # as a rerun finds it

    assert kernel.run(f"import sys; sys.path.insert(0, {HERE!r})\n"
                      "import pipeline_standin; pipeline_standin.register()").status == "ok"
    shown = kernel.run(f"%run_show {pipe.id}")
    assert shown.status == "ok", shown.error_text
    assert WIDGET in shown.data[-1]  # live
    views = "__import__('jupyter_compute.widgets.live').widgets.live.live_views()"
    assert kernel.value(f"type({views}[0]).__name__") == "PipelineWidget"
    assert "data-state=\"Reused\"" in kernel.value(f"{views}[0].graph.svg")

    # A click on a step opens its run below the graph.
    kernel.run(f"w = {views}[0]; w.graph.selected = 'prep'")
    assert kernel.value("type(w.detail.children[-1]).__name__") == "RunWidget"
    assert kernel.value("w.detail.children[-1].run.id") == prep.id

    # The steps move; the graph follows without any cell running.
    train = pipe.submit("train", "train.py")
    deadline = time.monotonic() + 30
    while "Running" not in kernel.value("w.steps[1]['status']"):
        assert time.monotonic() < deadline, kernel.value("w.steps")
        pipe.step("train", status=train.status().value)
        time.sleep(0.3)
    assert 'data-step="train" data-run-id="' + train.id in kernel.value("w.graph.svg")
    train.wait(60)
    pipe.step("train", status="Completed")
    pipe.step("eval", status="Skipped", reason="stand-in: nothing to evaluate")
    display_id = kernel.value("w.display_handle.display_id")
    pipe.end("Completed")
    seen = iopub_until(kernel, "update_display_data", timeout=60, when=lambda m: m[
        "content"]["transient"]["display_id"] == display_id)
    final = seen[-1]["content"]["data"]
    assert set(final) == {"text/plain", "text/html"}  # static: no widget view left
    html = final["text/html"]
    assert 'data-state="Reused"' in html and 'data-state="Completed"' in html
    assert 'data-state="Skipped"' in html and "stand-in: nothing to evaluate" in html
    assert "3 steps: 1 completed · 1 reused · 1 skipped" in final["text/plain"]
