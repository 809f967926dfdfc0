"""``RunWidget``: one run, live in a notebook cell, without blocking the kernel.

::

    from jupyter_compute import Run
    from jupyter_compute.widgets.run import RunWidget

    RunWidget(Run.get("20261126-0931-mnist-7f3a"))   # header, log tail, charts, outputs

A ``Follower`` thread reads the run by offset and calls ``_apply`` at most ten
times a second; ``_apply`` only assigns traits (ipywidgets PR #1794: never
``with out:`` from a thread). The log view keeps the last ``tail_lines`` lines,
so memory stays bounded however much the run prints. The display bundle also
carries a static HTML summary, shown where widgets do not render.
"""

from __future__ import annotations

import copy
import html
import threading
from collections import deque

import ipywidgets as widgets

import jupyter_compute.widgets.live as live
from jupyter_compute.protocol import RunStatus
from jupyter_compute.summary import Summary
from jupyter_compute.units import format_size
from jupyter_compute.widgets.follower import Batch, Follower

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runs import Run

MAX_POINTS = 2000          # per chart: older points are thinned, the shape is kept
FULL_LOG_LIMIT = 5_000_000  # bytes the "Full log" view loads at most
# column-reverse keeps the view scrolled to the newest line, as a terminal does.
_PRE = ('<div style="max-height:22em;overflow:auto;display:flex;flex-direction:column-reverse;'
        'background:var(--jp-layout-color2,#f5f5f5)"><pre style="margin:0;padding:4px 6px;'
        'font-size:12px;line-height:1.35;white-space:pre-wrap">')
_END = "</pre></div>"


class RunWidget(widgets.VBox):
    """Header, live log tail, metric charts, rows, images, outputs and a Cancel button."""

    def __init__(self, run: Run, tail_lines: int = 500, interval: float = 0.1,
                 follow: bool = True, **kwargs: Any) -> None:
        self.run = run
        self.tail_lines = tail_lines
        self.display_handle: Any = None  # set by whoever displays it, to update at the end
        self._tail: deque[str] = deque(maxlen=tail_lines)
        self._lines = 0
        self._status = run.record.status
        self._series: dict[str, tuple[list[Any], list[Any]]] = {}
        self._figures: dict[str, Any] = {}
        self._rows: dict[str, deque[dict[str, Any]]] = {}
        self._image_views: dict[str, widgets.Image] = {}
        self._ticks = 0
        self._done = False
        self._progress: dict[str, Any] | None = None  # a notebook run's current cell

        self.header = widgets.HTML()
        self.nodes = widgets.HTML(layout=widgets.Layout(display="none"))
        self.cancel_button = widgets.Button(description="Cancel", icon="stop",
                                            button_style="danger",
                                            layout=widgets.Layout(width="auto"))
        self.full_log_button = widgets.Button(description="Full log", icon="file-text",
                                              layout=widgets.Layout(width="auto"))
        self.log_view = widgets.HTML(_PRE + _END)
        self.full_log_view = widgets.Textarea(disabled=True, layout=widgets.Layout(
            display="none", width="100%", height="24em"))
        self.charts = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns="repeat(auto-fill, minmax(320px, 1fr))", width="100%"))
        self.table = widgets.HTML()
        self.images = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.outputs = widgets.HTML()
        self.cancel_button.on_click(self._on_cancel)
        self.full_log_button.on_click(self._on_full_log)
        bar = widgets.HBox([self.header, self.cancel_button, self.full_log_button],
                           layout=widgets.Layout(align_items="center", gap="8px"))
        super().__init__([bar, self.nodes, self.log_view, self.full_log_view, self.charts,
                          self.table, self.images, self.outputs], **kwargs)
        self._render_header()
        if RunStatus(run.record.status).is_terminal():
            self.cancel_button.disabled = True  # nothing to cancel: don't offer it
            self.cancel_button.description = run.record.status

        # The follower gets its own handle (and store connection): SQLite connections
        # are not shared between threads.
        from jupyter_compute.runs import Run as RunHandle
        from jupyter_compute.workspace import Workspace

        mine = RunHandle(copy.copy(run.record), Workspace(run.workspace.root))
        self.follower = Follower(mine, self._apply, interval=interval, tail_lines=tail_lines)
        if follow:
            self.follower.start()

    # -- what tests and users read back ------------------------------------------------

    @property
    def log_text(self) -> str:
        """The log lines the widget holds (the last ``tail_lines``)."""
        return "".join(self._tail)

    @property
    def status(self) -> str:
        return self._status

    # -- applying a batch (on the follower's thread: traits only) -------------------------

    def _apply(self, batch: Batch) -> None:
        self._ticks += 1
        self._status = batch.status.value
        self.run.record = copy.copy(self.follower.run.record)
        if batch.lines or batch.skipped:
            self._tail.extend(batch.lines)
            self._lines += len(batch.lines) + batch.skipped
            self.log_view.value = _PRE + html.escape("".join(self._tail)) + _END
        if batch.metrics:
            self._apply_metrics(batch.metrics)
        if self._ticks % 20 == 1 or batch.done:  # node counts and outputs: every 2 s
            self._render_nodes()
            self._render_outputs()
        self._render_header()
        if batch.done:
            self._done = True
            self.cancel_button.disabled = True
            self.cancel_button.description = batch.status.value
            # The view has ended: its output becomes the static summary, so a saved
            # notebook shows the outcome wherever it is opened.
            live.end(self)

    def _apply_metrics(self, records: list[dict[str, Any]]) -> None:
        changed: set[str] = set()
        for rec in records:
            name, kind, value = rec["name"], rec.get("kind", "scalar"), rec["value"]
            if kind == "scalar" and isinstance(value, (int, float)):
                xs, ys = self._series.setdefault(name, ([], []))
                xs.append(rec["step"] if rec.get("step") is not None else len(xs))
                ys.append(value)
                if len(xs) > MAX_POINTS:  # thin the older half, keep the recent detail
                    half = len(xs) // 2
                    xs[:half], ys[:half] = xs[:half:2], ys[:half:2]
                changed.add(name)
            elif kind == "list" and isinstance(value, list):
                self._series[name] = (list(range(len(value))), list(value))
                changed.add(name)
            elif kind == "row" and isinstance(value, dict):
                self._rows.setdefault(name, deque(maxlen=50)).append(
                    {"step": rec.get("step"), **value})
            elif kind == "image":
                self._show_image(name, str(value))
            elif kind == "progress" and isinstance(value, dict):
                self._progress = value
        for name in changed:
            self._plot(name)
        if any(r.get("kind") == "row" for r in records):
            self._render_rows()

    def _plot(self, name: str) -> None:
        import plotly.graph_objects as go

        xs, ys = self._series[name]
        fig = self._figures.get(name)
        if fig is None:
            fig = go.FigureWidget(layout=go.Layout(
                title={"text": name, "font": {"size": 13}}, height=240,
                margin={"l": 40, "r": 10, "t": 30, "b": 30}, showlegend=False))
            fig.add_scatter(x=list(xs), y=list(ys), mode="lines+markers", name=name)
            self._figures[name] = fig
            self.charts.children = (*self.charts.children, fig)
            return
        with fig.batch_update():
            fig.data[0].x = list(xs)
            fig.data[0].y = list(ys)

    def _render_rows(self) -> None:
        e = html.escape
        parts = []
        for name, rows in self._rows.items():
            cols = list(dict.fromkeys(k for row in rows for k in row))
            head = "".join(f"<th>{e(str(c))}</th>" for c in cols)
            body = "".join("<tr>" + "".join(f"<td>{e(str(row.get(c, '')))}</td>" for c in cols)
                           + "</tr>" for row in rows)
            parts.append(f"<b>{e(name)}</b><table class='jp-RenderedHTMLCommon'>"
                         f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        self.table.value = "".join(parts)

    def _show_image(self, name: str, path: str) -> None:
        data = self.follower.run.target.read(self.run.id, path)
        if not data:
            return
        view = self._image_views.get(name)
        if view is None:
            view = widgets.Image(format="png", layout=widgets.Layout(max_width="360px"))
            self._image_views[name] = view
            self.images.children = (*self.images.children, view)
        view.value = data

    def _render_outputs(self) -> None:
        try:
            if self._done:
                self.follower.run.outputs()  # fetches them back from a remote target
            files = _listing(self.follower.run)
        except Exception:  # noqa: BLE001 - a listing is best effort while running
            return
        if not files:
            return
        items = "".join(f"<li><code>{html.escape(name)}</code> ({format_size(size)})</li>"
                        for name, size in files)
        self.outputs.value = f"<b>outputs</b><ul style='margin:2px 0'>{items}</ul>"

    def _render_nodes(self) -> None:
        from jupyter_compute.targets import node_counts

        nodes = node_counts(self.follower.run.target)
        if nodes:
            self.nodes.layout.display = None
            self.nodes.value = (f"nodes <b>{nodes.get('current', '?')}</b> "
                                f"(min {nodes.get('min', '?')}, max {nodes.get('max', '?')})")

    def _render_header(self) -> None:
        s = self.summary()
        lines = f" · {self._lines} lines" if self._lines else ""
        cell = ""
        if self._progress:
            p = self._progress
            cell = (f" · cell <b>{p.get('cell')}/{p.get('of')}</b> "
                    f"<code>{html.escape(str(p.get('source', ''))[:60])}</code>")
        detail = self.follower.run.detail if hasattr(self, "follower") else None
        detail = f" · <i>{html.escape(detail)}</i>" if detail and not self._done else ""
        self.header.value = (f"<b>{html.escape(s.name)}</b> <code>{html.escape(s.run_id)}"
                             f"</code> on <b>{html.escape(s.target)}</b> {s.badge()} "
                             f"{s.elapsed()}{lines}{cell}{detail}")

    # -- buttons (on the kernel's main thread) ---------------------------------------

    def _on_cancel(self, _button: Any) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Canceling…"
        threading.Thread(target=self.run.cancel, daemon=True).start()

    def _on_full_log(self, _button: Any) -> None:
        if self.full_log_view.layout.display == "none":
            data = self.run.read_log()
            note = ""
            if len(data) > FULL_LOG_LIMIT:
                note = (f"[showing the last {format_size(FULL_LOG_LIMIT)} of "
                        f"{format_size(len(data))}]\n")
                data = data[-FULL_LOG_LIMIT:]
            self.full_log_view.value = note + data.decode(errors="replace")
            self.full_log_view.layout.display = None
            self.full_log_button.description = "Hide full log"
        else:
            self.full_log_view.layout.display = "none"
            self.full_log_view.value = ""
            self.full_log_button.description = "Full log"

    # -- display ---------------------------------------------------------------------

    def summary(self) -> Summary:
        """The widget's current state as a static summary (text/HTML)."""
        r = self.run.record
        last = {name: (ys[-1], xs[-1]) for name, (xs, ys) in self._series.items() if ys}
        return Summary(r.id, r.name, r.target, self._status, r.started, r.ended, r.error,
                       list(self._tail)[-15:], last)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        summary = self.summary().bundle()
        bundle["text/html"] = summary["text/html"]
        bundle["text/plain"] = summary["text/plain"]
        return bundle


def _listing(run: Run) -> list[tuple[str, int]]:
    folder = run.target.outputs_dir(run.id)
    if not folder.is_dir():
        return []
    return sorted((str(p.relative_to(folder)), p.stat().st_size)
                  for p in folder.rglob("*") if p.is_file())
