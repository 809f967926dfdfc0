"""``ClusterWidget``: a cluster target's worker nodes, live, with a chart of their count.

::

    from jupyter_compute.api import get_target
    from jupyter_compute.widgets.cluster import ClusterWidget

    ClusterWidget(get_target("cpu-cluster"))   # nodes 1 (pending 1, idle 0) · min 0 · max 4

A background thread asks the target for ``nodes()`` every ``interval`` seconds (at
least 0.1 s, so at most ten updates a second) and only assigns traits — never
``with out:`` from a thread (ipywidgets PR #1794). The chart is an inline SVG of
the current and pending node counts over time, between the target's min and max.
Where widgets do not render, the display falls back to a static text/HTML line
(``cluster_bundle``), which is also what a saved notebook keeps.
"""

from __future__ import annotations

import html
import threading
import time

import ipywidgets as widgets

import jupyter_compute.summary as summaries
import jupyter_compute.widgets.live as live
from jupyter_compute.targets import node_counts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.targets.base import Target

MIN_INTERVAL = 0.1
HISTORY = 600  # points kept: 10 minutes at the default interval
_W, _H, _PAD = 360, 84, 4


def counts_text(name: str, nodes: dict[str, Any] | None) -> str:
    """One line: ``cpu-cluster · nodes 1 (pending 1, idle 0) · min 0 · max 4``.

    >>> counts_text("c", {"current": 1, "pending": 0, "idle": 1, "min": 0, "max": 2})
    'c · nodes 1 (pending 0, idle 1) · min 0 · max 2'
    """
    if not nodes:
        return f"{name} · no node information"
    extra = [f"{key} {nodes[key]}" for key in ("pending", "idle") if nodes.get(key) is not None]
    text = f"{name} · nodes {nodes.get('current', '?')}"
    text += f" ({', '.join(extra)})" if extra else ""
    text += f" · min {_dash(nodes.get('min'))} · max {_dash(nodes.get('max'))}"
    if nodes.get("running") is False:
        text += " · stopped"
    return text


def cluster_bundle(name: str, nodes: dict[str, Any] | None) -> dict[str, str]:
    """The static display of node counts (text/plain and text/html)."""
    text = counts_text(name, nodes)
    return {"text/plain": text,
            "text/html": f"<div class='jp-RenderedHTMLCommon'><code>{html.escape(text)}"
                         "</code></div>"}


def sparkline(points: list[tuple[float, int, int]], lo: int | None,
              hi: int | None) -> str:
    """An SVG step chart of ``(time, current, pending)`` points, with min/max guides."""
    top = max([hi or 0, 1] + [c + p for _, c, p in points])
    if not points:
        return f"<svg width='{_W}' height='{_H}'></svg>"
    t0, t1 = points[0][0], max(points[-1][0], points[0][0] + 1e-9)

    def x(t: float) -> float:
        return _PAD + (_W - 2 * _PAD) * (t - t0) / (t1 - t0) if len(points) > 1 else _W / 2

    def y(v: float) -> float:
        return _H - _PAD - (_H - 2 * _PAD) * v / top

    def steps(values: list[tuple[float, float]]) -> str:
        out, prev = [], None
        for t, v in values:
            if prev is not None:
                out.append(f"{x(t):.1f},{y(prev):.1f}")
            out.append(f"{x(t):.1f},{y(v):.1f}")
            prev = v
        out.append(f"{_W - _PAD:.1f},{y(prev or 0):.1f}")
        return " ".join(out)

    parts = [f"<svg width='{_W}' height='{_H}' style='background:var(--jp-layout-color1,"
             "#fff);border:1px solid var(--jp-border-color2,#ddd)'>"]
    for level, label in ((lo, "min"), (hi, "max")):
        if level is not None:
            parts.append(f"<line x1='{_PAD}' x2='{_W - _PAD}' y1='{y(level):.1f}' "
                         f"y2='{y(level):.1f}' stroke='#9ca3af' stroke-dasharray='3,3'/>"
                         f"<text x='{_W - _PAD - 2}' y='{y(level) - 2:.1f}' font-size='9' "
                         f"text-anchor='end' fill='#6b7280'>{label} {level}</text>")
    parts.append(f"<polyline fill='none' stroke='#f59e0b' stroke-dasharray='4,2' "
                 f"points='{steps([(t, c + p) for t, c, p in points])}'/>")
    parts.append(f"<polyline fill='none' stroke='#2563eb' stroke-width='2' "
                 f"points='{steps([(t, c) for t, c, _ in points])}'/>")
    parts.append("</svg>")
    return "".join(parts)


class ClusterWidget(widgets.VBox):
    """Current, pending and idle worker nodes against min/max, and their count over time.

    ``follow=False`` asks once, now, and never polls (``refresh()`` updates it).
    The polling thread ends with ``close()``/``stop()`` or after ``max_seconds``.

    >>> ClusterWidget(get_target("cpu-cluster"), interval=1.0)
    """

    def __init__(self, target: Target, interval: float = 1.0, follow: bool = True,
                 max_seconds: float = 4 * 3600.0, **kwargs: Any) -> None:
        self.target = target
        self.interval = max(MIN_INTERVAL, float(interval))
        self.max_seconds = max_seconds
        self.points: list[tuple[float, int, int]] = []
        self.last: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.counts = widgets.HTML()
        self.chart = widgets.HTML()
        super().__init__([self.counts, self.chart], **kwargs)
        self._stop = threading.Event()
        # One target object serves every thread (what a submission knows is in its context).
        self._poller = target
        self._thread = threading.Thread(target=self._loop, name=f"nodes-{target.name}",
                                        daemon=True)
        self._started = time.monotonic()
        self.counts.value = f"<code>{html.escape(target.name)} · asking for nodes…</code>"
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
        if nodes:
            now = time.time()
            point = (now, int(nodes.get("current") or 0), int(nodes.get("pending") or 0))
            if self.points and self.points[-1][1:] == point[1:] and len(self.points) > 1 and \
                    self.points[-2][1:] == point[1:]:
                self.points[-1] = point  # a flat stretch keeps two points, not hundreds
            else:
                self.points.append(point)
            del self.points[:-HISTORY]
        counts = html.escape(counts_text(self.target.name, nodes))
        if self.counts.value != counts:
            self.counts.value = f"<code>{counts}</code>"
        chart = sparkline(self.points, (nodes or {}).get("min"), (nodes or {}).get("max"))
        if self.chart.value != chart:
            self.chart.value = chart

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
        return summaries.ClusterSummary(self.target.name, self.last, list(self.points))

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


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)
