"""``ClusterWidget``: a cluster target's worker nodes, live, with a chart of their count.

::

    from jupyter_compute.api import get_target
    from jupyter_compute.widgets.cluster import ClusterWidget

    ClusterWidget(get_target("cpu-cluster"))   # nodes 1 (pending 1, idle 0) · min 0 · max 4

A background thread asks the target for ``nodes()`` every ``interval`` seconds (at
least 0.1 s, so at most ten updates a second) and only assigns traits — never
``with out:`` from a thread (ipywidgets PR #1794). The chart (``charts.py``, as
every widget's) plots current, pending and idle nodes against time, with the
target's min and max marked. Start and Stop call the target's ``Cluster``
capability on a thread of their own. Where widgets do not render, the display
falls back to a static text/HTML line (``cluster_bundle``), which is also what a
saved notebook keeps.
"""

from __future__ import annotations

import html
import threading
import time
from datetime import datetime

import ipywidgets as widgets

import jupyter_compute.summary as summaries
import jupyter_compute.widgets.live as live
from jupyter_compute.targets import node_counts
from jupyter_compute.widgets.charts import Chart, ChartGrid, plotly_ready

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.targets.base import Target

MIN_INTERVAL = 0.1
HISTORY = 600  # points kept: 10 minutes at the default interval


counts_text = summaries.counts_text  # one line of counts: the live header and the summary


def cluster_bundle(name: str, nodes: dict[str, Any] | None) -> dict[str, str]:
    """The static display of node counts (text/plain and text/html)."""
    text = counts_text(name, nodes)
    return {"text/plain": text,
            "text/html": f"<div class='jp-RenderedHTMLCommon'><code>{html.escape(text)}"
                         "</code></div>"}


def options_text(target: Target, nodes: dict[str, Any] | None) -> str:
    """The cluster's shape as people say it: ``0 of max 2 nodes · idle 120 s · 1 CPU each``.

    >>> options_text(get_target("cpu-cluster"), {"current": 0, "min": 0, "max": 2})
    '0 of max 2 nodes · idle nodes removed after 120 s · 1 CPU per node'
    """
    nodes = nodes or {}
    opt = getattr(getattr(target, "launcher", None), "opt", target.config.get)
    current, lo, hi = nodes.get("current"), nodes.get("min"), nodes.get("max")
    parts = []
    if hi is not None:
        count = f"{current if current is not None else '?'} of max {hi} nodes"
        parts.append(count + (f" (at least {lo})" if lo else ""))
    elif current is not None:
        parts.append(f"{current} node{'' if current == 1 else 's'}")
    idle = opt("idle_seconds")
    if idle is not None:
        parts.append(f"idle nodes removed after {idle:g} s")
    cpus = opt("node_cpus")
    if cpus:
        parts.append(f"{cpus} CPU{'' if cpus == 1 else 's'} per node")
    return " · ".join(parts)


class ClusterWidget(widgets.VBox):
    """Current, pending and idle worker nodes against min/max, and their count over time.

    ``follow=False`` asks once, now, and never polls (``refresh()`` updates it).
    The polling thread ends with ``close()``/``stop()`` or after ``max_seconds``.

    >>> ClusterWidget(get_target("cpu-cluster"), interval=1.0)
    """

    def __init__(self, target: Target, interval: float = 1.0, follow: bool = True,
                 max_seconds: float = 4 * 3600.0, **kwargs: Any) -> None:
        from jupyter_compute.targets.base import Cluster

        self.target = target
        self.interval = max(MIN_INTERVAL, float(interval))
        self.max_seconds = max_seconds
        #: ``(time, current, pending, idle)`` of each poll (flat stretches kept short)
        self.points: list[tuple[float, int, int, int]] = []
        self.last: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.counts = widgets.HTML()
        self.counts.add_class("jc-run-head")
        self.start_button = widgets.Button(description="Start", icon="play",
                                           tooltip=f"start {target.name}'s cluster",
                                           layout=widgets.Layout(width="auto",
                                                                 display="none"))
        self.stop_button = widgets.Button(description="Stop", icon="stop",
                                          tooltip=f"stop {target.name}'s cluster (its runs end)",
                                          layout=widgets.Layout(width="auto", display="none"))
        self.start_button.on_click(lambda _b: self._act("start"))
        self.stop_button.on_click(lambda _b: self._act("stop"))
        self._acting: str | None = None
        self._controls = isinstance(target, Cluster)
        self._stop = threading.Event()  # before anything can fail: close() sets it
        bar = widgets.HBox([self.counts, self.start_button, self.stop_button])
        bar.add_class("jc-run-bar")
        self.charts = ChartGrid(tools=False, time_axis=False)
        self.chart: Chart | None = None  # made on the first answer (plotly loads slowly)
        super().__init__([bar, self.charts], **kwargs)
        # One target object serves every thread (what a submission knows is in its context).
        self._poller = target
        self._thread = threading.Thread(target=self._loop, name=f"nodes-{target.name}",
                                        daemon=True)
        self._started = time.monotonic()
        self.counts.value = f"<b>{html.escape(target.name)}</b> · asking for nodes…"
        if follow:
            self._thread.start()  # it asks at once: the kernel never waits on the cluster
        else:
            self.refresh(self.target)

    # -- polling (on the widget's thread: traits only) ----------------------------------

    def refresh(self, target: Target | None = None) -> dict[str, Any] | None:
        """Ask the target once and show the answer; returns the counts."""
        try:
            nodes = node_counts(target or self._poller)
        except Exception as exc:  # noqa: BLE001 - a poll that fails is shown, not raised
            self.error = exc
            self.counts.value = (f"<b>{html.escape(self.target.name)}</b> · "
                                 f"<span style='color:#dc2626'>{html.escape(str(exc))}</span>")
            return None
        self.error = None
        self._apply(nodes)
        return nodes

    def _apply(self, nodes: dict[str, Any] | None) -> None:
        self.last = nodes
        self._render_counts(nodes)
        if not nodes:
            return
        now = time.time()
        point = (now, int(nodes.get("current") or 0), int(nodes.get("pending") or 0),
                 int(nodes.get("idle") or 0))
        if len(self.points) > 1 and self.points[-1][1:] == point[1:] == self.points[-2][1:]:
            self.points[-1] = point  # a flat stretch keeps two points, not hundreds
        else:
            self.points.append(point)
        del self.points[:-HISTORY]
        self._render_chart(nodes)

    def _render_counts(self, nodes: dict[str, Any] | None) -> None:
        name = f"<b>{html.escape(self.target.name)}</b> <span style='opacity:0.7'>" \
               f"({html.escape(self.target.kind)})</span>"
        if not nodes:
            value = f"{name} · no node information"
        else:
            running = nodes.get("running") is not False
            color = "#16a34a" if running else "#6b7280"
            state = "running" if running else "stopped"
            if self._acting:
                state, color = f"{self._acting}…", "#2563eb"
            badge = (f'<span style="background:{color};color:white;border-radius:9px;'
                     f'padding:1px 8px;font-size:0.85em">{state}</span>')
            now = [f"{nodes.get(key)} {key}" for key in ("pending", "idle")
                   if nodes.get(key)]
            value = (f"{name} {badge} {html.escape(options_text(self.target, nodes))}"
                     + (f" · <b>{html.escape(', '.join(now))}</b>" if now else ""))
            if self._controls and not self._acting:
                self.start_button.layout.display = "none" if running else None
                self.stop_button.layout.display = None if running else "none"
        if self.counts.value != value:
            self.counts.value = value

    def _render_chart(self, nodes: dict[str, Any]) -> None:
        if self.chart is None and not plotly_ready():
            return  # the points wait; the next poll draws them all
        if self.chart is None:
            self.chart = self.charts.add(Chart("worker nodes", x_title="time",
                                               integer_x=False, time_x=True,
                                               integer_y=True, height=230))
        times = [datetime.fromtimestamp(t) for t, *_ in self.points]
        lines: tuple[tuple[str, int, dict[str, Any]], ...] = (
            ("current", 1, {"line": {"shape": "hv", "width": 2.5}, "color": "#2563eb"}),
                 ("pending", 2, {"line": {"shape": "hv", "dash": "dash"}, "color": "#f59e0b"}),
                 ("idle", 3, {"line": {"shape": "hv", "dash": "dot"}, "color": "#6b7280"}))
        for label, column, style in lines:
            self.chart.set_series(label, times, [p[column] for p in self.points],
                                  mode="lines", **style)
        lo, hi = nodes.get("min"), nodes.get("max")
        shapes, notes = [], []
        for level, label in ((lo, "min"), (hi, "max")):
            if level is None:
                continue
            shapes.append({"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": level,
                           "y1": level, "line": {"color": "#9ca3af", "dash": "dot",
                                                  "width": 1}})
            notes.append({"xref": "paper", "x": 0.01, "xanchor": "left", "y": level,
                          "yanchor": "bottom", "text": f"{label} {level}", "showarrow": False,
                          "font": {"size": 10, "color": "#6b7280"}})
        top = max([hi or 0, 1] + [p[1] + p[2] for p in self.points])
        self.chart.redraw(extra={"shapes": shapes, "annotations": notes,
                                 "yaxis.range": [-0.2, top + 0.6], "yaxis.autorange": False,
                                 "showlegend": True,
                                 "legend": {"orientation": "h", "x": 1, "xanchor": "right",
                                            "y": 1.02, "yanchor": "bottom"}})

    # -- buttons (on the kernel's main thread; the work on a thread of its own) -------

    def _act(self, action: str) -> None:
        from jupyter_compute.targets import cluster_of

        self._acting = "starting" if action == "start" else "stopping"
        for button in (self.start_button, self.stop_button):
            button.disabled = True
        self._render_counts(self.last)

        def work() -> None:
            try:
                getattr(cluster_of(self.target), action)()
                self.error = None
            except Exception as exc:  # noqa: BLE001 - shown in the widget, not raised
                self.error = exc
            finally:
                self._acting = None
                for button in (self.start_button, self.stop_button):
                    button.disabled = False
                forget = getattr(getattr(self.target, "launcher", None), "forget_nodes", None)
                if forget is not None:
                    forget()
                self.refresh()
                if self.error is not None:
                    self.counts.value += (f"<br><span style='color:#dc2626'>could not {action}: "
                                          f"{html.escape(str(self.error))}</span>")

        threading.Thread(target=work, name=f"{action}-{self.target.name}", daemon=True).start()

    def _loop(self) -> None:
        while time.monotonic() - self._started < self.max_seconds:
            began = time.monotonic()
            self.refresh()
            if self._stop.wait(max(MIN_INTERVAL, self.interval - (time.monotonic() - began))):
                break
        live.end(self)  # no longer live: its output becomes the static summary

    def stop(self) -> None:
        """Stop polling (the widget keeps its last state)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def following(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        self.stop()
        super().close()

    # -- display ---------------------------------------------------------------------

    def summary(self) -> summaries.ClusterSummary:
        """The counts and their history so far, as static text/HTML (an SVG chart)."""
        return summaries.ClusterSummary(self.target.name, self.last,
                                        [(t, current, pending) for t, current, pending, *_
                                         in self.points])

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle.update(self.summary().bundle())  # what shows once the kernel is gone
        return bundle


class ClusterSummary:
    """The static node counts of a target (what shows where widgets cannot)."""

    def __init__(self, target: Target) -> None:
        self.name = target.name
        self.nodes = node_counts(target)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, str]:
        return cluster_bundle(self.name, self.nodes)

    def __repr__(self) -> str:
        return counts_text(self.name, self.nodes)


def cluster_display(target: Target) -> ClusterWidget | ClusterSummary:
    """What ``%compute show NAME`` displays for a cluster target: the live widget in a
    kernel that can show widgets, else the static counts.

    >>> display(cluster_display(get_target("cpu-cluster")))
    """
    from jupyter_compute.widgets import widgets_available

    return ClusterWidget(target) if widgets_available() else ClusterSummary(target)


def show_cluster(target: Target) -> ClusterWidget | None:
    """Display a cluster target's nodes (``%compute show``): live until the widget stops
    polling or the kernel goes, then a static summary with the counts over time; static
    at once where widgets cannot render. Returns the live widget, or None.

    >>> show_cluster(get_target("cpu-cluster"))
    """
    from IPython.display import display

    shown = cluster_display(target)
    if not isinstance(shown, ClusterWidget):
        display(shown)
        return None
    if shown.last is None:
        shown.refresh()  # the counts (cached a second) in the output's static part too
    live.show(shown, lambda quick: shown.summary())
    return shown

