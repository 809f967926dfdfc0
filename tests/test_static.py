"""The final state of every display is static: the summaries' charts and log tails, and,
in a real kernel, the output of a view that ends or whose kernel shuts down."""

from __future__ import annotations

import queue
import re
import time
from collections.abc import Callable

from jupyter_compute.summary import ClusterSummary, Summary, SweepSummary
from jupyter_compute.svgchart import line_chart, nice_ticks, value_range

from conftest import Project
from kernel import Kernel

WIDGET = "application/vnd.jupyter.widget-view+json"


def test_integer_steps_get_integer_ticks_and_a_lone_point_a_range_around_it() -> None:
    assert nice_ticks(0, 3, integer=True) == [0, 1, 2, 3]  # never 0.5, 1.5
    svg = line_chart({"loss": ([0, 1, 2, 3], [0.9, 0.5, 0.4, 0.3])})
    x_ticks = re.findall(r'text-anchor="middle" fill="currentColor" fill-opacity="0.75">'
                         r'([^<]*)</text>', svg)
    assert [t for t in x_ticks if t != "step"] == ["0", "1", "2", "3"]
    lo, hi = value_range([0.87])
    assert 0.7 < lo < 0.87 < hi < 1.0  # not -0.5..1
    assert value_range([5], integer=True) == (4, 6)
    single = line_chart({"acc": ([3], [0.87])})
    assert "<circle" in single  # a lone point is drawn
    assert line_chart({}) == "" and line_chart({"x": ([], [])}) == ""


def test_one_colour_per_series_with_a_legend() -> None:
    svg = line_chart({f"trial {i}": ([1, 2], [i, i + 1]) for i in range(3)})
    colours = set(re.findall(r'<polyline fill="none" stroke="(#[0-9a-f]{6})"', svg))
    assert len(colours) == 3
    for i in range(3):
        assert f">trial {i}</text>" in svg  # the legend names each series
    many = line_chart({f"t{i}": ([1], [i]) for i in range(14)})
    assert "+4 more" in many


def test_log_tail_is_one_line_per_line() -> None:
    s = Summary("id-1", "r", "local", "Completed", log_tail=["a\n", "b\n", "10%\r50%\r100%\n"])
    assert s.log_tail == ["a", "b", "100%"]
    assert "a\nb\n100%</pre>" in s.html()
    assert "  | a\n  | b\n  | 100%" in s.text()


def test_run_summary_has_charts_and_outputs() -> None:
    s = Summary("id-1", "r", "local", "Completed", series={"loss": ([0, 1], [0.5, 0.25])},
                outputs=[("model.pkl", 2048)])
    html = s.html()
    assert "<svg" in html and ">loss</text>" in html
    assert "model.pkl" in html and "2.0 KiB" in html and "model.pkl (2.0 KiB)" in s.text()


def test_sweep_summary_draws_every_trial_and_shows_reasons() -> None:
    state = {"id": "s1", "status": "Completed", "primary_metric": {"name": "acc",
             "goal": "Maximize"}, "max_total_runs": 3,
             "trials": [{"index": 0, "run_id": "r0", "arguments": ["--lr", "0.1"],
                         "status": "Completed", "metric": 0.9, "intervals": 3},
                        {"index": 1, "run_id": "r1", "arguments": ["--lr", "0.9"],
                         "status": "Canceled", "metric": 0.2, "intervals": 1,
                         "stop_reason": "bandit: 0.2 < 0.75"}]}
    points = [{"trial": 0, "interval": i, "value": v} for i, v in enumerate([0.5, 0.8, 0.9])]
    points.append({"trial": 1, "interval": 0, "value": 0.2})  # stopped after one point
    html = SweepSummary(state, points).html()
    assert ">trial 0</text>" in html and ">trial 1</text>" in html
    assert "bandit: 0.2 &lt; 0.75" in html and WIDGET not in html


def test_cluster_summary_charts_nodes_over_time() -> None:
    nodes = {"current": 1, "pending": 0, "idle": 0, "min": 0, "max": 2}
    points = [(100.0, 0, 1), (105.0, 1, 0), (130.0, 1, 0)]
    s = ClusterSummary("cpu-cluster", nodes, points)
    assert s.text().startswith("cpu-cluster · nodes 1 (pending 0, idle 0) · min 0 · max 2 · "
                               "as of ")  # when the last count was taken
    assert "<svg" in s.html() and ">max 2</text>" in s.html() and ">seconds</text>" in s.html()
    assert "<svg" not in ClusterSummary("c", nodes, points[:1]).html()  # counts only


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
    said = [m["content"].get("text") or m["content"].get("traceback") for m in seen
            if m["msg_type"] in ("stream", "error")]  # what a failing cell or thread said
    raise AssertionError(f"no {kind} in {[m['msg_type'] for m in seen]}; said: {said}")


def test_an_ended_run_becomes_static(project: Project, kernel: Kernel) -> None:
    code = ("%%submit --wait --name quick\nfrom jupyter_compute.tracking import get_run\n"
            "for i in range(3):\n    print('line', i)\n"
            "    get_run().log('loss', 1 / (i + 1), step=i)\n")
    kernel.kc.execute(code)
    seen = iopub_until(kernel, "display_data")
    assert WIDGET in seen[-1]["content"]["data"]  # live while it runs
    display_id = seen[-1]["content"]["transient"]["display_id"]
    # The update comes from the follower's thread (whatever cell it names as parent),
    # once the run has ended.
    seen = iopub_until(kernel, "update_display_data", timeout=120, when=lambda m: m[
        "content"]["transient"]["display_id"] == display_id)
    final = seen[-1]["content"]["data"]
    assert set(final) == {"text/plain", "text/html"}
    assert "Completed" in final["text/html"] and "<svg" in final["text/html"]
    assert "line 1\nline 2</pre>" in final["text/html"]


def test_a_run_seen_ending_by_its_own_view_still_becomes_static(project: Project,
                                                                 kernel: Kernel) -> None:
    """On a busy machine a quick run can end while its view is being built, and the
    view's follower, which starts with it, reads the end first. That run was followed to
    its end, not brought back ended (which stays live to explore): it becomes static."""
    project.write("quick.py", "print('quick done')\n")
    assert kernel.run("from jupyter_compute import api\n"
                      "r = api.submit('quick.py'); r.wait(timeout=60)").status == "ok"
    # The handle of a fresh submit still says Queued; the run itself has ended. The view
    # is built slowly, as on a busy machine: its follower reads the end meanwhile.
    kernel.kc.execute(
        "import time\nfrom jupyter_compute import runkinds, widgets\n"
        "built = runkinds.view\n"
        "def slowly_built(run, **kw):\n"
        "    shown = built(run, **kw)\n"
        "    deadline = time.monotonic() + 30\n"
        "    while run.record.status == 'Queued' and time.monotonic() < deadline:\n"
        "        time.sleep(0.05)\n"
        "    return shown\n"
        "runkinds.view = slowly_built\n"
        "r.record.status = 'Queued'\n"
        "try:\n    widgets.show(r)\nfinally:\n    runkinds.view = built\n")
    seen = iopub_until(kernel, "display_data")
    display_id = seen[-1]["content"]["transient"]["display_id"]
    seen = iopub_until(kernel, "update_display_data", timeout=60, when=lambda m: m[
        "content"]["transient"]["display_id"] == display_id)
    assert "quick done" in seen[-1]["content"]["data"]["text/html"]


def test_kernel_shutdown_makes_live_outputs_static(project: Project) -> None:
    """ipykernel's shutdown_request → do_shutdown (hooked) → update_display_data on IOPub,
    before the shutdown_reply: what a frontend saves afterwards is static."""
    # Long enough to be running whatever the machine's load; canceled at the end.
    project.write("slow.py", "import time\nprint('started', flush=True)\ntime.sleep(600)\n")
    project.write("quick.py", "print('quick done')\n")
    k = Kernel(project.root)
    slow_id = None
    try:
        assert k.run("%load_ext jupyter_compute").status == "ok"
        assert k.run("%submit quick.py --wait -o q").status == "ok"
        # An ended run brought back stays live (to explore) until the kernel goes.
        shown = k.run("%run_show {q.id}".replace("{q.id}", k.value("q.id")))
        assert WIDGET in shown.data[-1]
        assert k.run("%submit slow.py -o r").status == "ok"
        slow_id = k.value("r.id")
        deadline = time.monotonic() + 60
        while "started" not in k.value("r.log()"):
            assert time.monotonic() < deadline, k.value("r.status(), r.log()")
            time.sleep(0.2)
        started = time.monotonic()
        deadline = started + 60  # the --wait view's last update may come late
        while k.value("len(__import__('jupyter_compute.widgets.live').widgets.live"
                      ".live_views())") != "2":
            assert time.monotonic() < deadline, "the ended run's view is still live"
            time.sleep(0.5)
        quiet = time.monotonic() + 1  # forget what was sent so far (the live view
        while time.monotonic() < quiet:  # sends all the time: never wait for silence)
            try:
                k.kc.get_iopub_msg(timeout=0.1)
            except queue.Empty:
                pass
        k.kc.shutdown()
        seen = iopub_until(k, "shutdown_reply")
        updates = [m["content"] for m in seen if m["msg_type"] == "update_display_data"]
        assert len(updates) == 2, [m["msg_type"] for m in seen]
        texts = sorted(u["data"]["text/plain"] for u in updates)
        for u in updates:
            assert set(u["data"]) == {"text/plain", "text/html"}
            assert u["transient"]["display_id"]
        assert "quick · local · Completed" in texts[0] + texts[1]
        assert any("slow · local · Running" in t and "| started" in t for t in texts), (
            texts, f"live views: {time.monotonic() - started:.1f} s")
        k.km.finish_shutdown()
    finally:
        k.kc.stop_channels()
        if k.km.is_alive():
            k.km.shutdown_kernel(now=True)
        from jupyter_compute.runs import Run

        if slow_id:
            Run.get(slow_id, project.root).cancel()  # the run outlives its kernel: end it


def test_an_ended_run_shown_before_plotly_is_imported_gets_its_charts(project: Project,
                                                                      kernel: Kernel) -> None:
    """The follower's first batch of an ended run is its last: it waits for plotly's
    import (on its own thread) rather than leave the charts undrawn for good."""
    project.write("m.py", "from jupyter_compute.tracking import get_run\n"
                          "get_run().log('loss', 0.5, step=1)\n")
    out = kernel.run("from jupyter_compute import api\nr = api.submit('m.py')\nr.wait()")
    assert out.status == "ok", out.error_text
    code = ("import sys\nfresh = 'plotly.graph_objects' not in sys.modules\n"
            "from jupyter_compute.magics import show\nw = show(r)\nw.follower.join(60)\n"
            "print(fresh, sorted(w._figures))\n")
    out = kernel.run(code)
    assert out.status == "ok", out.error_text
    assert out.stdout.split() == ["True", "['loss']"], out.stdout
