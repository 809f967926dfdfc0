"""``PipelineWidget``: a pipeline, live in a notebook cell, without blocking the kernel.

::

    from jupyter_compute import Run
    from jupyter_compute.widgets.pipeline import PipelineWidget

    PipelineWidget(Run.get("20261207-0600-etl-1a2b"))   # the steps' graph, live; click a step

The graph is ``svgdag``'s drawing (the one the static summary and the sidebar's
run page show), each step coloured by its state: Not started, Queued, Running,
Completed, Reused, Failed, Skipped. A follower thread asks the pipeline for its
steps (``Pipeline.steps()``, which reads the controller's ``steps.json``) every
``interval`` seconds and its status every second, and hands over only what changed,
by assigning traits (never ``with out:`` from a thread). Clicking a step opens its
run's ``RunWidget`` below the graph. When the pipeline ends, the output becomes the
static ``PipelineSummary`` (``live``), so a saved notebook shows the final graph.
"""

from __future__ import annotations

import copy
import html
import threading
import time

import anywidget
import ipywidgets as widgets
import traitlets

import jupyter_compute.widgets.live as live
from jupyter_compute.protocol import TERMINAL_STATUSES
from jupyter_compute.summary import PipelineSummary
from jupyter_compute.svgdag import dag_svg
from jupyter_compute.widgets.follower import PollingThread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runs import Run

STATUS_EVERY = 1.0  # seconds between reads of the pipeline's own status
#: How long an ended pipeline's steps may still read as active before the view ends
#: anyway (the controller writes the steps' last states just before its own end).
SETTLE_SECONDS = 3.0
ACTIVE = ("Queued", "Preparing", "Running")

_ESM = """
function render({ model, el }) {
  el.classList.add("jc-dag-view");
  function draw() {
    el.innerHTML = model.get("svg");
    const selected = model.get("selected");
    for (const g of el.querySelectorAll(".jc-dag-step")) {
      const name = g.getAttribute("data-step");
      g.setAttribute("tabindex", "0");
      g.setAttribute("role", "button");
      if (name === selected) g.classList.add("jc-dag-selected");
      const choose = () => {
        model.set("selected", name === model.get("selected") ? "" : name);
        model.save_changes();
      };
      g.addEventListener("click", choose);
      g.addEventListener("keydown", (e) => {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); }
      });
    }
  }
  model.on("change:svg", draw);
  model.on("change:selected", draw);
  draw();
}
export default { render };
"""

_CSS = """
.jc-dag-view { overflow-x: auto; max-width: 100%; padding: 2px 0; }
.jc-dag-view .jc-dag-step { cursor: pointer; outline: none; }
.jc-dag-view .jc-dag-step:hover rect:first-of-type,
.jc-dag-view .jc-dag-step:focus rect:first-of-type { stroke-width: 2.6; fill-opacity: 0.24; }
.jc-dag-view .jc-dag-selected rect:first-of-type { stroke-width: 3; fill-opacity: 0.28; }
@keyframes jc-dag-pulse { 50% { fill-opacity: 0.32; } }
.jc-dag-view [data-state="Running"] rect:first-of-type,
.jc-dag-view [data-state="Preparing"] rect:first-of-type {
  animation: jc-dag-pulse 1.6s ease-in-out infinite; }
.jc-pipeline-steps table { border-collapse: collapse; font-size: 12px; }
.jc-pipeline-steps th { text-align: left; padding: 2px 8px;
  border-bottom: 1px solid var(--jp-border-color1, #ccc); }
.jc-pipeline-steps td { padding: 1px 8px; vertical-align: top; }
"""


class StepGraph(anywidget.AnyWidget):
    """The steps' graph (``svg``, from ``svgdag``); clicking a step sets ``selected``."""

    _esm = _ESM
    _css = _CSS
    svg = traitlets.Unicode("").tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)


class PipelineWidget(widgets.VBox):
    """Header with the steps' counts, Cancel, the graph, the steps' table, and the
    clicked step's ``RunWidget``."""

    def __init__(self, pipeline: Run, interval: float = 0.25, follow: bool = True,
                 **kwargs: Any) -> None:
        self.pipeline = pipeline
        self.interval = interval
        self.display_handle: Any = None
        self.status: str = pipeline.record.status
        self.steps: list[dict[str, Any]] = _steps(pipeline)
        self._done = False
        self.updates = 0  # how many changes were applied (tests read it)

        self.header = widgets.HTML()
        self.header.add_class("jc-run-head")
        self.cancel_button = widgets.Button(description="Cancel pipeline", icon="stop",
                                            button_style="danger",
                                            layout=widgets.Layout(width="auto",
                                                                  flex="0 0 auto"))
        self.cancel_button.on_click(self._on_cancel)
        self.graph = StepGraph()
        self.graph.observe(self._on_select, "selected")
        self.table = widgets.HTML()
        self.table.add_class("jc-pipeline-steps")
        self.hint = widgets.HTML('<span style="opacity:0.7">Click a step to see its run.'
                                 "</span>")
        self.detail = widgets.VBox([self.hint])
        bar = widgets.HBox([self.header, self.cancel_button])
        bar.add_class("jc-run-bar")
        super().__init__([bar, self.graph, self.table, self.detail], **kwargs)
        if self.status in TERMINAL_STATUSES:
            self.cancel_button.layout.display = "none"
        self._render()

        # The follower reads through its own handle: SQLite connections are not shared
        # between threads.
        from jupyter_compute import runkinds
        from jupyter_compute.workspace import Workspace

        mine = runkinds.handle(copy.copy(pipeline.record), Workspace(pipeline.workspace.root))
        self.follower = _Follower(self, mine, interval)
        if follow:
            self.follower.start()

    # -- applying (on the follower's thread: traits only) --------------------------------

    def _apply(self, status: str, steps: list[dict[str, Any]], record: Any) -> None:
        self.updates += 1
        self.status, self.steps = status, steps
        self.pipeline.record = record
        self._render()
        if status in TERMINAL_STATUSES and not self._done:
            self.cancel_button.layout.display = "none"  # the badge says how it ended

    def _end(self) -> None:
        if not self._done:
            self._done = True
            live.end(self)  # its output becomes the static summary (a saved notebook)

    def _render_header(self) -> None:
        header = self.summary().header_html()  # its time too, so it moves while it runs
        if self.header.value != header:
            self.header.value = header

    def _render(self) -> None:
        self._render_header()
        summary = self.summary()
        svg = dag_svg(self.steps, selected=self.graph.selected)
        if self.graph.svg != svg:
            self.graph.svg = svg
        table = summary.table_html()
        if self.table.value != table:
            self.table.value = table

    # -- interaction (on the kernel's main thread) ---------------------------------------

    def _on_select(self, change: dict[str, Any]) -> None:
        self.graph.svg = dag_svg(self.steps, selected=change["new"])
        self.select(change["new"])

    def select(self, name: str) -> None:
        """Show step ``name``'s run below the graph (its live ``RunWidget``); "" hides it."""
        for child in self.detail.children:  # the previous step's widget stops following
            follower = getattr(child, "follower", None)
            if follower is not None:
                follower.stop()
        step = next((s for s in self.steps if s.get("name") == name), None)
        if step is None:
            self.detail.children = (self.hint,)
            return
        if not step.get("run_id"):
            from jupyter_compute.svgdag import state_label, step_state

            why = step.get("reason") or step.get("error") or ""
            note = widgets.HTML(
                f"step <b>{html.escape(name)}</b>: {state_label(step_state(step)).lower()}"
                + (f" ({html.escape(str(why))})" if why else "") + "; it has no run yet")
            self.detail.children = (note,)
            return
        from jupyter_compute import runkinds
        from jupyter_compute.runs import Run

        run = Run.get(step["run_id"], self.pipeline.workspace)
        shown = runkinds.view(run)  # its kind's view: a RunWidget, a sweep step's SweepWidget
        if not isinstance(shown, widgets.Widget):
            shown = widgets.HTML(shown.html())
        title = widgets.HTML(f"step <b>{html.escape(name)}</b>"
                             + (" · reused: the earlier run whose outputs it took"
                                if step.get("reused") else ""))
        self.detail.children = (title, shown)

    def _on_cancel(self, _button: Any) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Canceling…"
        threading.Thread(target=self.pipeline.cancel, daemon=True).start()

    # -- display -------------------------------------------------------------------------

    def summary(self) -> PipelineSummary:
        """The widget's current state as a static summary (text/HTML)."""
        return PipelineSummary(_state(self.pipeline.record, self.status, self.steps))

    def static_summary(self, quick: bool = False) -> PipelineSummary:
        """The pipeline's state read afresh (what its output becomes when it ends), from
        a handle of its own: the caller may be any thread."""
        from jupyter_compute import runkinds
        from jupyter_compute.workspace import Workspace

        record = copy.copy(self.pipeline.record)
        mine = runkinds.handle(record, Workspace(self.pipeline.workspace.root))
        status = mine.status().value
        return PipelineSummary(_state(mine.record, status, _steps(mine)))

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        summary = self.summary().bundle()
        bundle["text/html"] = summary["text/html"]
        bundle["text/plain"] = summary["text/plain"]
        return bundle


def _steps(pipeline: Any) -> list[dict[str, Any]]:
    steps = pipeline.steps() if hasattr(pipeline, "steps") else []
    return [dict(s) for s in steps or []]


def _state(record: Any, status: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "status": status,
            "started": record.started, "ended": record.ended, "error": record.error,
            "steps": steps}


class _Follower(PollingThread):
    """Asks the pipeline for its steps and status on a daemon thread; hands changes over."""

    def __init__(self, widget: PipelineWidget, pipeline: Any, interval: float) -> None:
        super().__init__(f"follow-{pipeline.id}", interval)
        self.widget = widget
        self.pipeline = pipeline
        self.status = widget.status
        self.steps = widget.steps
        self._status_at = 0.0
        self._ended_at: float | None = None

    def tick(self) -> bool:
        now = time.monotonic()
        status = self.status
        # Every second; every tick once no step is left to run (the end is near).
        idle = not any(s.get("status") in (*ACTIVE, "NotStarted") for s in self.steps)
        if status not in TERMINAL_STATUSES and (idle or now - self._status_at >= STATUS_EVERY):
            self._status_at = now
            status = self.pipeline.status().value
            self.widget._render_header()
        steps = _steps(self.pipeline)  # after the status: once it is final, these are too
        if status != self.status or steps != self.steps:
            self.status, self.steps = status, steps
            self.widget._apply(status, steps, copy.copy(self.pipeline.record))
        if status not in TERMINAL_STATUSES:
            return False
        if self._ended_at is None:
            self._ended_at = now
        settled = not any(s.get("status") in ACTIVE for s in steps)
        if settled or now - self._ended_at >= SETTLE_SECONDS:
            self.widget._end()
            return True
        return False
