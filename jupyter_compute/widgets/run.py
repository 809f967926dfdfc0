"""``RunWidget``: one run, live in a notebook cell, without blocking the kernel.

::

    from jupyter_compute import Run
    from jupyter_compute.widgets.run import RunWidget

    RunWidget(Run.get("20261126-0931-mnist-7f3a"))   # header, log tail, charts, outputs

A ``Follower`` thread reads the run by offset and calls ``_apply`` at most ten
times a second; ``_apply`` only assigns traits (ipywidgets PR #1794: never
``with out:`` from a thread). The log view keeps the last ``tail_lines`` lines,
so memory stays bounded however much the run prints; "show all" swaps in the
whole log (up to ``FULL_LOG_LIMIT``). The log view is a small anywidget: it
follows the newest line while the person has not scrolled up, and otherwise
offers a "↓ new lines" chip that jumps back. Status, log and node counts come
from one poll, and each tick sets the header before anything slower (charts,
outputs), so the badge never trails the log. The display bundle also carries a
static HTML summary, shown where widgets do not render.
"""

from __future__ import annotations

import copy
import html
import re
import threading
import time
from collections import deque

import anywidget
import ipywidgets as widgets
import traitlets

import jupyter_compute.widgets.live as live
from jupyter_compute.protocol import RunStatus, early_stop_reason
from jupyter_compute.summary import Summary
from jupyter_compute.units import format_size
from jupyter_compute.widgets.charts import PLOTLY_WAIT, Chart, ChartGrid, plotly_ready
from jupyter_compute.widgets.follower import Batch, Follower

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runs import Run

MAX_POINTS = 2000          # per chart: older points are thinned, the shape is kept
FULL_LOG_LIMIT = 5_000_000  # bytes "show all" loads at most
FULL_LOG_EVERY = 1.0        # seconds between reloads of the whole log while it grows
NODES_EVERY = 10            # ticks between node counts (1 s at the default interval)
CHARTS_EVERY = 0.5          # seconds between chart redraws while a run streams

_LOG_ESM = """
function render({ model, el }) {
  el.classList.add("jc-log");
  const scroller = document.createElement("div");
  scroller.className = "jc-log-scroll";
  const pre = document.createElement("pre");
  scroller.appendChild(pre);
  const chip = document.createElement("button");
  chip.className = "jc-log-new";
  chip.textContent = "\u2193 new lines";
  chip.hidden = true;
  const bar = document.createElement("div");
  bar.className = "jc-log-bar";
  const note = document.createElement("span");
  const toggle = document.createElement("button");
  toggle.className = "jc-log-toggle";
  bar.append(note, toggle);
  el.append(scroller, chip, bar);
  // Follow the newest line unless the person scrolled up to read: only their own
  // scrolling (wheel, keys, touch, dragging the bar) stops following; reaching the
  // bottom again resumes it.
  let follow = true, userAt = 0;
  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 8;
  const toBottom = () => { scroller.scrollTop = scroller.scrollHeight; };
  for (const name of ["wheel", "keydown", "touchmove", "pointerdown"])
    scroller.addEventListener(name, (e) => {
      userAt = performance.now();
      // Upward intent stops following at once (a smooth scroll lands later).
      if ((name === "wheel" && e.deltaY < 0) ||
          (name === "keydown" && ["ArrowUp", "PageUp", "Home"].includes(e.key))) follow = false;
    }, { passive: true });
  scroller.addEventListener("scroll", () => {
    const bottom = atBottom();
    if (performance.now() - userAt < 1500) follow = bottom;  // their scroll (smooth: later)
    if (bottom) { follow = true; chip.hidden = true; }
  });
  chip.onclick = () => {
    follow = true;
    chip.hidden = true;
    toBottom();
  };
  toggle.onclick = () => { model.set("show_all", !model.get("show_all")); model.save_changes(); };
  function drawBar() {
    const hidden = model.get("hidden"), all = model.get("show_all");
    const shown = model.get("lines");
    bar.hidden = !all && hidden <= 0;
    note.textContent = all ? "showing the whole log" + (hidden > 0 ? " (its last part)" : "")
      : "showing the last " + shown.toLocaleString() + " of " +
        (shown + hidden).toLocaleString() + " lines";
    toggle.textContent = all ? "show the tail only" : "show all";
  }
  function draw() {
    const text = model.get("text");
    scroller.hidden = !text;
    pre.textContent = text;
    if (follow) {
      toBottom();
      requestAnimationFrame(toBottom);  // once laid out (a first render is not yet)
    } else chip.hidden = false;
    drawBar();
  }
  // The text reflows without changing (a theme's font arriving, the cell resized):
  // still at the newest line afterwards.
  const reflow = new ResizeObserver(() => { if (follow) toBottom(); });
  reflow.observe(pre);
  model.on("change:text", draw);
  model.on("change:hidden", drawBar);
  model.on("change:show_all", drawBar);
  draw();
  return () => reflow.disconnect();
}
export default { render };
"""

_LOG_CSS = """
.jc-log { position: relative; width: 100%; }
.jc-log-scroll { max-height: 22em; overflow: auto; background: var(--jp-layout-color2, #f5f5f5);
  border-radius: 3px; }
.jc-log-scroll pre { margin: 0; padding: 4px 6px; font-size: 12px; line-height: 1.35;
  white-space: pre-wrap; word-break: break-word; color: var(--jp-content-font-color1, #111);
  font-family: var(--jp-code-font-family, monospace); }
.jc-log-new { position: absolute; right: 18px; bottom: 30px; border-radius: 12px;
  border: 1px solid var(--jp-brand-color1, #2563eb); background: var(--jp-brand-color1, #2563eb);
  color: white; padding: 2px 10px; font-size: 12px; cursor: pointer; opacity: 0.92; }
.jc-log-bar { font-size: 11px; color: var(--jp-ui-font-color2, #666); padding: 2px 4px; }
.jc-log-toggle { margin-left: 8px; border: none; background: none; padding: 0; cursor: pointer;
  color: var(--jp-brand-color1, #2563eb); text-decoration: underline; font-size: 11px; }
"""


class LogView(anywidget.AnyWidget):
    """The log: ``text`` (the tail, or the whole log with ``show_all``), how many earlier
    lines are not in it (``hidden``), and the browser-side follow / "new lines" chip."""

    _esm = _LOG_ESM
    _css = _LOG_CSS
    text = traitlets.Unicode("").tag(sync=True)
    lines = traitlets.Int(0).tag(sync=True)
    hidden = traitlets.Int(0).tag(sync=True)
    show_all = traitlets.Bool(False).tag(sync=True)


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
        self._times: dict[str, list[float]] = {}   # wall-clock time of each point
        self._unplotted: set[str] = set()  # metrics with points not drawn yet
        self._figures: dict[str, Chart] = {}
        self._rows: dict[str, deque[dict[str, Any]]] = {}
        self._image_views: dict[str, widgets.Image] = {}
        self._ticks = 0
        self._done = False
        self._progress: dict[str, Any] | None = None  # a notebook run's current cell
        #: A multi-node run's other ranks' metrics, ``(name, rank) → (steps, values)``:
        #: charts show rank 0 unless "every rank" is ticked.
        self._rank_series: dict[tuple[str, int], tuple[list[Any], list[Any]]] = {}

        self._full_at = 0.0
        self._quiet = _quiet_pattern(run)

        self.header = widgets.HTML()
        self.header.add_class("jc-run-head")
        self.nodes = widgets.HTML(layout=widgets.Layout(display="none"))
        self.cancel_button = widgets.Button(description="Cancel", icon="stop",
                                            tooltip="cancel the run",
                                            layout=widgets.Layout(width="auto"))
        self.log_view = LogView()
        self.log_view.observe(self._on_show_all, "show_all")
        self.charts = ChartGrid()
        self.table = widgets.HTML()
        self.images = widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))
        self.outputs = widgets.HTML()
        self.cancel_button.on_click(self._on_cancel)
        bar = widgets.HBox([self.header, self.cancel_button])
        bar.add_class("jc-run-bar")
        # A multi-node run: whose log lines to show, and whether charts show every rank.
        world = _world_size(run)
        self.rank_filter = widgets.Dropdown(
            options=[("every rank", -1), *((f"rank {r}", r) for r in range(world))],
            value=-1, description="log", layout=widgets.Layout(width="auto"))
        self.every_rank = widgets.Checkbox(value=False, description="charts: every rank",
                                           indent=False, layout=widgets.Layout(width="auto"))
        self.rank_filter.observe(self._on_show_all, "value")  # the same re-render
        self.every_rank.observe(self._on_every_rank, "value")
        ranks = widgets.HBox([self.rank_filter, self.every_rank], layout=widgets.Layout(
            display=None if world > 1 else "none"))
        super().__init__([bar, self.nodes, ranks, self.log_view, self.charts, self.table,
                          self.images, self.outputs], **kwargs)
        self._render_header()
        if RunStatus(run.record.status).is_terminal():
            self.cancel_button.layout.display = "none"  # nothing to cancel: don't offer it

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
            # Lines the target calls chatter stay out of the view (counted as not shown;
            # "show all" has them).
            self._tail.extend(batch.lines if self._quiet is None else
                              [line for line in batch.lines if not self._quiet.match(line)])
            self._lines += len(batch.lines) + batch.skipped
        for rec in batch.metrics:  # a notebook run's current cell belongs in the header
            if rec.get("kind") == "progress" and isinstance(rec.get("value"), dict):
                self._progress = rec["value"]
        # Status and log of one poll go out together, before anything slower; the log
        # first, so the badge never says Completed above a log still missing its end.
        if batch.lines or batch.skipped or batch.done:
            self._render_log(batch.done)
        self._render_header()
        if batch.done:
            self._done = True
            self.cancel_button.layout.display = "none"  # the badge says how it ended
            self.nodes.layout.display = "none"  # the cluster's nodes outlive the run
        elif self._ticks % NODES_EVERY == 1:
            self._render_nodes()
        if batch.metrics:
            self._apply_metrics(batch.metrics, batch.done)
        elif self._unplotted:
            self._plot_pending(last=batch.done)
        if self._ticks % 20 == 1 or batch.done:  # outputs: every 2 s
            self._render_outputs()
        if batch.done:
            # The view has ended: its output becomes the static summary, so a saved
            # notebook shows the outcome wherever it is opened.
            live.end(self)

    def _apply_metrics(self, records: list[dict[str, Any]], done: bool = False) -> None:
        changed: set[str] = set()
        for rec in records:
            name, kind, value = rec["name"], rec.get("kind", "scalar"), rec["value"]
            rank = rec.get("rank")
            if rank:  # another rank than 0: its scalars, drawn on request
                if kind == "scalar" and isinstance(value, (int, float)):
                    xs, ys = self._rank_series.setdefault((name, rank), ([], []))
                    xs.append(rec["step"] if rec.get("step") is not None else len(xs))
                    ys.append(value)
                    changed.add(name)
                continue
            if kind == "scalar" and isinstance(value, (int, float)):
                xs, ys = self._series.setdefault(name, ([], []))
                times = self._times.setdefault(name, [])
                xs.append(rec["step"] if rec.get("step") is not None else len(xs))
                ys.append(value)
                times.append(float(rec.get("time") or 0.0))
                if len(xs) > MAX_POINTS:  # thin the older half, keep the recent detail
                    half = len(xs) // 2
                    xs[:half], ys[:half] = xs[:half:2], ys[:half:2]
                    times[:half] = times[:half:2]
                changed.add(name)
            elif kind == "list" and isinstance(value, list):
                self._series[name] = (list(range(len(value))), list(value))
                self._times.pop(name, None)
                changed.add(name)
            elif kind == "row" and isinstance(value, dict):
                self._rows.setdefault(name, deque(maxlen=50)).append(
                    {"step": rec.get("step"), **value})
            elif kind == "image":
                self._show_image(name, str(value))
            elif kind == "progress" and isinstance(value, dict):
                self._progress = value
        self._unplotted |= changed
        self._plot_pending(last=done)
        if any(r.get("kind") == "row" for r in records):
            self._render_rows()

    def _plot_pending(self, now: bool = False, last: bool = False) -> None:
        """Draw the metrics that changed, once plotly is loaded (until then they wait),
        at most every ``CHARTS_EVERY`` seconds (``now``: draw at once). The log streams
        ten times a second; a browser redrawing every chart as often fell behind on a
        busy machine. The ``last`` batch draws at once and waits for plotly: no later
        one would draw."""
        if not (now or last) and time.monotonic() - self.charts.redrawn_at < CHARTS_EVERY:
            return
        if self._unplotted and plotly_ready(PLOTLY_WAIT if last else 0.0):
            changed, self._unplotted = self._unplotted, set()
            self.charts.redraw(*(self._plot(name) for name in sorted(changed)))

    def _plot(self, name: str) -> Chart:
        """The chart of metric ``name``, its series set (drawn by the caller)."""
        xs, ys = self._series.get(name, ([], []))
        chart = self._figures.get(name)
        if chart is None:
            chart = self._figures[name] = self.charts.add(Chart(name, x_title="step"))
        every = self.every_rank.value
        chart.set_series(name, xs, ys, self._times.get(name),
                         label="rank 0" if every and self._rank_series else None)
        for (metric, rank), (rxs, rys) in list(self._rank_series.items()):
            if metric == name:  # hidden unless asked for: an empty series draws nothing
                chart.set_series(f"{name}@{rank}", rxs if every else [], rys if every else [],
                                 label=f"rank {rank}")
        return chart

    def _on_every_rank(self, _change: dict[str, Any]) -> None:
        self._unplotted |= {name for name, _rank in list(self._rank_series)}
        self._plot_pending(now=True)

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

    def _render_log(self, final: bool = False) -> None:
        view = self.log_view
        if view.show_all:
            now = time.monotonic()
            if final or now - self._full_at >= FULL_LOG_EVERY:
                self._load_full_log()
            return
        view.text = self._shown_lines("".join(self._tail))
        view.lines = len(self._tail)
        view.hidden = self._lines - len(self._tail)

    def _load_full_log(self) -> None:
        data = self.follower.run.read_log()
        cut = max(0, len(data) - FULL_LOG_LIMIT)
        if cut:
            data = data[data.find(b"\n", cut) + 1:]
        text = self._shown_lines(data.decode(errors="replace"))
        self._full_at = time.monotonic()
        self.log_view.text = text
        self.log_view.lines = text.count("\n")
        self.log_view.hidden = 1 if cut else 0

    def _shown_lines(self, text: str) -> str:
        """``text``, or only the chosen rank's lines (without their prefix)."""
        rank = self.rank_filter.value
        if rank is None or rank < 0:
            return text
        from jupyter_compute.ranks import rank_lines

        return "".join(rank_lines(text.splitlines(keepends=True), rank))

    def _render_nodes(self) -> None:
        from jupyter_compute.targets import node_counts

        target = self.follower.run.target
        try:
            nodes = node_counts(target)
            job = target.job(self.run.id)
        except Exception:  # noqa: BLE001 - node counts are extra; the run goes on
            return
        if nodes:
            self.nodes.layout.display = None
            self.nodes.value = _nodes_text(target.name, nodes) + _job_link(job)

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
        badge = s.badge()
        reason = early_stop_reason(s.status, s.error)
        if reason:  # the sweep's policy stopped it: say so, and why
            badge = ('<span style="background:#a16207;color:white;border-radius:9px;'
                     'padding:1px 8px;font-size:0.85em">Stopped early</span>')
            detail = f"<br><span style='color:#a16207'>{html.escape(reason)}</span>"
        value = (f"<b>{html.escape(s.name)}</b> <code>{html.escape(s.run_id)}"
                 f"</code> on <b>{html.escape(s.target)}</b> {badge} "
                 f"{s.elapsed()}{lines}{cell}{detail}")
        if self.header.value != value:
            self.header.value = value

    # -- buttons (on the kernel's main thread) ---------------------------------------

    def _on_cancel(self, _button: Any) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Canceling…"
        threading.Thread(target=self.run.cancel, daemon=True).start()

    def _on_show_all(self, _change: dict[str, Any]) -> None:
        if self.log_view.show_all:
            self._load_full_log()
        else:
            self._render_log()

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


def _job_link(job: dict[str, Any] | None) -> str:
    """`` · app-… RUNNING`` linked to the job's UI (a Spark application's), or nothing."""
    if not job or not job.get("ui_url"):
        return ""
    e = html.escape
    return (f' · <a href="{e(str(job["ui_url"]))}" target="_blank" rel="noopener">'
            f'<code>{e(str(job.get("id")))}</code></a> {e(str(job.get("state") or ""))}')


def _quiet_pattern(run: Run) -> re.Pattern[str] | None:
    """The run's target's ``quiet_log`` pattern, compiled; None if it has none."""
    try:
        pattern = run.target.quiet_log
    except Exception:  # noqa: BLE001 - a detached target: show every line
        return None
    return re.compile(pattern) if pattern else None


def _world_size(run: Run) -> int:
    """How many ranks the run has (1 unless it is a multi-node run)."""
    ranks = (run.record.spec or {}).get("ranks") or {}
    return int(ranks.get("nodes", 1)) * int(ranks.get("procs_per_node", 1))


def _nodes_text(target: str, nodes: dict[str, Any]) -> str:
    """``cluster cpu-cluster · 1 node · 1 pending · 0 idle · max 2`` (HTML).

    >>> _nodes_text("c", {"current": 0, "pending": 1, "idle": 0, "max": 2})
    'cluster <b>c</b> · <b>0</b> nodes · <b>1 pending</b> · max 2'
    """
    current = int(nodes.get("current") or 0)
    parts = [f"cluster <b>{html.escape(target)}</b>",
             f"<b>{current}</b> node{'' if current == 1 else 's'}"]
    if nodes.get("pending"):
        parts.append(f"<b>{nodes['pending']} pending</b>")
    if nodes.get("idle"):
        parts.append(f"{nodes['idle']} idle")
    if nodes.get("max") is not None:
        parts.append(f"max {nodes['max']}")
    if nodes.get("running") is False:
        parts.append("stopped")
    return " · ".join(parts)


def _listing(run: Run) -> list[tuple[str, int]]:
    folder = run.target.outputs_dir(run.id)
    if not folder.is_dir():
        return []
    return sorted((str(p.relative_to(folder)), p.stat().st_size)
                  for p in folder.rglob("*") if p.is_file())
