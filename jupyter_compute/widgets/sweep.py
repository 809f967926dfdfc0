"""``SweepWidget``: a sweep, live in a notebook cell, without blocking the kernel.

::

    from jupyter_compute.sweep import Sweep
    from jupyter_compute.widgets.sweep import SweepWidget

    SweepWidget(Sweep.get("7f3a"))   # trials table, curves, best so far, parallel coordinates

A follower thread reads the sweep's folder — ``sweep.json`` (replaced by the
controller at most four times a second) when it changed, and ``trials.jsonl`` by
byte offset — and applies what changed at most four times a second, by assigning
traits only (never ``with out:`` from a thread). Header and table go out first,
so the widget is live from the controller's first decision (the charts' first
draw loads plotly, which takes seconds). Costs stay flat with hundreds of
trials: the table is one trait holding the rows, sorted in the browser; trials
share ten coloured traces (one per colour, trial k in trace (k - 1) mod 10, so ten
trials have ten colours and a legend; markers, so a trial stopped after one
value shows), thinned to ``MAX_POINTS``, and only changed traces are re-sent; the
parallel-coordinates chart is redrawn at most once a second. A trial its policy
stopped reads "Stopped early", with the reason. Clicking a trial opens its
``RunWidget`` below the table. The display bundle also carries a static HTML
summary for places where widgets do not render.
"""

from __future__ import annotations

import copy
import html
import json
import threading
import time

import anywidget
import ipywidgets as widgets
import traitlets

import jupyter_compute.widgets.live as live
from jupyter_compute.protocol import TERMINAL_STATUSES
from jupyter_compute.summary import STATUS_COLORS, Summary, SweepSummary
from jupyter_compute.widgets.charts import COLORS, Chart, ChartGrid, plotly_ready
from jupyter_compute.widgets.follower import PollingThread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.sweep.handle import Sweep

MAX_POINTS = 300        # per trial on the curves chart: older points are thinned
STOPPED = "Stopped early"  # what a trial its policy stopped reads as
PARCOORDS_EVERY = 1.0   # seconds between redraws of the parallel-coordinates chart
#: Plasma without its darkest and palest ends: every line shows on a light and a
#: dark background (Viridis' low end vanished on the dark theme, its high end on white).
PARCOORDS_COLORS = ["#9c179e", "#bd3786", "#d8576b", "#ed7953", "#fb9f3a"]

_ESM = """
function render({ model, el }) {
  const table = document.createElement("table");
  table.className = "jc-trials";
  el.appendChild(table);
  const colors = COLORS;
  function compare(a, b, key) {
    const x = a[key], y = b[key];
    if (x === null || x === undefined) return (y === null || y === undefined) ? 0 : 1;
    if (y === null || y === undefined) return -1;
    if (typeof x === "number" && typeof y === "number") return x - y;
    return String(x).localeCompare(String(y), undefined, { numeric: true });
  }
  function draw() {
    const cols = model.get("columns"), key = model.get("sort_by");
    const desc = model.get("descending"), best = model.get("best");
    const selected = model.get("selected");
    const rows = [...model.get("rows")];
    rows.sort((a, b) => {
      const nulls = (a[key] === null) - (b[key] === null);
      if (nulls) return nulls;  // trials without a value last, either way
      const c = compare(a, b, key);
      return (desc ? -c : c) || a.index - b.index;
    });
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    for (const col of cols) {
      const th = document.createElement("th");
      th.textContent = col.label + (col.key === key ? (desc ? " \\u25BC" : " \\u25B2") : "");
      th.title = "sort by " + col.label;
      th.onclick = () => {
        if (col.key === key) model.set("descending", !desc);
        else { model.set("sort_by", col.key); model.set("descending", col.key === "metric"); }
        model.save_changes();
      };
      head.appendChild(th);
    }
    const body = table.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      if (row.run_id && row.run_id === best) tr.className = "jc-best";
      if (row.run_id && row.run_id === selected) tr.className += " jc-selected";
      tr.title = row.run_id ? "open run " + row.run_id : "";
      tr.onclick = () => { model.set("selected", row.run_id || ""); model.save_changes(); };
      for (const col of cols) {
        const td = tr.insertCell();
        const v = row[col.key];
        td.textContent = v === null || v === undefined ? "" :
          (typeof v === "number" && !Number.isInteger(v) ? v.toPrecision(4) : String(v));
        if (col.key === "status") td.style.color = colors[v] || "";
        td.className = "jc-col-" + col.key.replace(/[^a-z0-9_-]/gi, "_");
      }
    }
  }
  for (const name of ["rows", "columns", "sort_by", "descending", "best", "selected"])
    model.on("change:" + name, draw);
  draw();
}
export default { render };
""".replace("COLORS", json.dumps({**STATUS_COLORS, STOPPED: "#a16207"}))

_CSS = """
.jc-trials { border-collapse: collapse; font-size: 12px; width: 100%; }
.jc-trials th { cursor: pointer; text-align: left; padding: 2px 8px; user-select: none;
  border-bottom: 1px solid var(--jp-border-color1, #ccc); white-space: nowrap; }
.jc-trials td { padding: 1px 8px; white-space: nowrap; vertical-align: top; }
/* The reason is the one long column: it wraps, so the table fits the cell. */
.jc-trials td.jc-col-reason { white-space: normal; overflow-wrap: anywhere; min-width: 12em; }
.jc-trials tbody tr { cursor: pointer; }
.jc-trials tbody tr:hover { background: var(--jp-layout-color2, #f3f4f6); }
.jc-trials tr.jc-best { font-weight: bold; background: rgba(22, 163, 74, 0.15); }
.jc-trials tr.jc-selected { outline: 2px solid #2563eb; }
"""


class TrialTable(anywidget.AnyWidget):
    """The trials, sortable by any column in the browser; a click sets ``selected``."""

    _esm = _ESM
    _css = _CSS
    columns: traitlets.List[Any] = traitlets.List().tag(sync=True)
    rows: traitlets.List[Any] = traitlets.List().tag(sync=True)
    best = traitlets.Unicode("").tag(sync=True)
    sort_by = traitlets.Unicode("metric").tag(sync=True)
    descending = traitlets.Bool(True).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)


class SweepWidget(widgets.VBox):
    """Header, warnings, trials table, curves, best so far, parallel coordinates."""

    def __init__(self, sweep: Sweep, interval: float = 0.25, follow: bool = True,
                 **kwargs: Any) -> None:
        self.sweep = sweep
        self.interval = interval
        self.display_handle: Any = None
        self.state: dict[str, Any] = sweep.state()
        self._curves: dict[int, tuple[list[int], list[float]]] = {}
        self._parcoords_at = 0.0
        self._parcoords_key: Any = None
        self._figures: dict[str, Chart] = {}  # made on the first update (see _apply)
        self._drawn: dict[int, int] = {}  # trial → how many of its points the chart has
        self._charts_due = False  # the charts wait for plotly; the follower asks again
        self._done = False
        self.updates = 0  # how many batches were applied (tests and benchmarks read it)

        self.header = widgets.HTML()
        self.cancel_button = widgets.Button(description="Cancel sweep", icon="stop",
                                            button_style="danger",
                                            layout=widgets.Layout(width="auto",
                                                                  flex="0 0 auto"))
        self.cancel_button.on_click(self._on_cancel)
        self.warning_box = widgets.HTML(layout=widgets.Layout(display="none"))
        self.table = TrialTable()
        self.table.observe(self._on_select, "selected")
        self.header.add_class("jc-run-head")
        self.charts = ChartGrid(time_axis=False)
        self.detail = widgets.VBox()
        bar = widgets.HBox([self.header, self.cancel_button])
        bar.add_class("jc-run-bar")
        scroller = widgets.Box([self.table], layout=widgets.Layout(
            max_height="24em", overflow_y="auto", overflow_x="hidden", width="100%"))
        super().__init__([bar, self.warning_box, scroller, self.charts, self.detail], **kwargs)
        self._render_header()
        self._render_warnings()
        self._render_table()

        # The follower reads through its own handle: SQLite connections are not shared
        # between threads.
        from jupyter_compute.runs import Run
        from jupyter_compute.workspace import Workspace

        self._run = Run(copy.copy(sweep.record), Workspace(sweep.workspace.root))
        self.follower = _Follower(self, interval)
        if follow:
            self.follower.start()

    # -- what tests and users read back -------------------------------------------------

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.table.rows)

    @property
    def status(self) -> str:
        return str(self.state.get("status"))

    # -- applying (on the follower's thread: traits only) --------------------------------

    def _apply(self, state: dict[str, Any], points: list[dict[str, Any]]) -> None:
        self.updates += 1
        trials_changed = state.get("trials") != self.state.get("trials")
        self.state = state
        for p in points:
            xs, ys = self._curves.setdefault(int(p["trial"]), ([], []))
            xs.append(int(p["interval"]))
            ys.append(float(p["value"]))
            if len(xs) > MAX_POINTS:  # thin the older half, keep the recent detail
                half = len(xs) // 2
                xs[:half], ys[:half] = xs[:half:2], ys[:half:2]
        # What the controller decided goes out first; the charts follow.
        self._render_header()
        self._render_warnings()
        if trials_changed:
            self._render_table()
        ended = state.get("status") in TERMINAL_STATUSES
        if ended and not self._done:
            self.cancel_button.layout.display = "none"  # the badge says how it ended
        if not self._figures:
            # Made here, on the follower's thread, once plotly is imported (a thread of
            # its own loads it: seconds that must hold up neither the cell nor the table).
            if not plotly_ready():
                self._charts_due = True
                return
            self._make_charts()
            trials_changed = True
        if trials_changed or self._charts_due:
            self._charts_due = False
            self._render_best_so_far()
        if points or trials_changed:
            self._render_curves()
        now = time.monotonic()
        if trials_changed and (now - self._parcoords_at >= PARCOORDS_EVERY or ended):
            self._render_parcoords()
            self._parcoords_at = now
        if ended and not self._done:
            self._done = True
            live.end(self)  # its output becomes the static summary (a saved notebook)

    def _render_header(self) -> None:
        s = self.state
        trials = s.get("trials") or []
        running = sum(t["status"] in ("Queued", "Preparing", "Running") for t in trials)
        stopped = sum(_status(t) == STOPPED for t in trials)
        badge = Summary("", "", "", str(s.get("status"))).badge()
        best = s.get("best")
        metric = (s.get("primary_metric") or {}).get("name", "metric")
        best_text = "" if not best else (
            f" · best <b>{html.escape(metric)} {best['metric']:.4g}</b> (trial {best['index']}: "
            f"{_arguments_html(best['arguments'])})")
        self.header.value = (
            f"<b>{html.escape(str(s.get('name')))}</b> <code>{html.escape(str(s.get('id')))}"
            f"</code> on <b>{html.escape(str(s.get('target')))}</b> {badge} "
            f"{len(trials)}/{s.get('max_total_runs')} trials · {running} running · "
            f"{stopped} stopped early{best_text}")

    def _render_warnings(self) -> None:
        warnings = self.state.get("warnings") or []
        if not warnings:
            self.warning_box.layout.display = "none"
            return
        self.warning_box.layout.display = None
        items = "".join(f"<div>⚠ {html.escape(w)}</div>" for w in warnings)
        value = (f'<div style="background:#fef3c7;color:#92400e;border:1px solid #f59e0b;'
                 f'padding:4px 8px;border-radius:4px">{items}</div>')
        if self.warning_box.value != value:
            self.warning_box.value = value

    def _render_table(self) -> None:
        s = self.state
        params = list(s.get("parameters") or [])
        metric = (s.get("primary_metric") or {}).get("name", "metric")
        columns = ([{"key": "index", "label": "#"}]
                   + [{"key": f"p:{p}", "label": p} for p in params]
                   + [{"key": "status", "label": "status"}, {"key": "metric", "label": metric},
                      {"key": "intervals", "label": "intervals"},
                      {"key": "reason", "label": "reason"}, {"key": "run_id", "label": "run"}])
        rows = []
        for t in s.get("trials") or []:
            row = {"index": t["index"], "run_id": t["run_id"] or "", "status": _status(t),
                   "metric": t["metric"], "intervals": t["intervals"],
                   "reason": t.get("stop_reason") or (t.get("error") or "").strip()[-200:]}
            for p in params:
                value = t["params"].get(p)
                row[f"p:{p}"] = value if isinstance(value, (int, float, str)) else str(value)
            rows.append(row)
        if columns != self.table.columns:
            self.table.columns = columns
        if rows != self.table.rows:
            self.table.rows = rows
        best = (s.get("best") or {}).get("run_id") or ""
        if best != self.table.best:
            self.table.best = best

    # -- charts ------------------------------------------------------------------------

    def _make_charts(self) -> None:
        metric = (self.state.get("primary_metric") or {}).get("name", "metric")
        curves = Chart(f"{metric} per trial", x_title="interval")
        best = Chart(f"best {metric} so far", x_title="trials ended")
        par = Chart("parameters against the metric", wide=True, height=300)
        par.fig.layout.margin = {"l": 60, "r": 90, "t": 75, "b": 20}
        par.fig.add_parcoords(dimensions=[])
        self._figures = {"curves": curves, "best": best, "parcoords": par}
        for chart in (curves, best, par):
            self.charts.add(chart)

    def _render_curves(self) -> None:
        # One trace per colour, not per trial: plotly pays per trace (hundreds of trials
        # took seconds to add), so trial k goes in trace (k - 1) mod 10, in that trace's
        # colour, a NaN between trials breaking the line. While each trace holds one
        # trial, the legend names it; hover always does. Markers, so a trial stopped
        # after one value shows. Only the traces with a changed trial are re-sent.
        import numpy as np

        chart = self._figures["curves"]
        groups: dict[int, list[int]] = {}
        for trial in sorted(self._curves):
            groups.setdefault((trial - 1) % len(COLORS), []).append(trial)
        changed = set()
        for group, trials in groups.items():
            if all(self._drawn.get(t) == len(self._curves[t][1]) for t in trials):
                continue
            xs, ys, ids = [], [], []
            for t in trials:
                txs, tys = self._curves[t]
                self._drawn[t] = len(tys)
                xs.append(np.array([*txs, np.nan]))
                ys.append(np.array([*tys, np.nan]))
                ids.append(np.full(len(txs) + 1, t))
            name = f"colour {group}"
            label = f"trial {trials[0]}" if len(trials) == 1 else f"{len(trials)} trials"
            chart.set_series(name, np.concatenate(xs), np.concatenate(ys), label=label,
                             customdata=np.concatenate(ids), color=COLORS[group],
                             mode="lines+markers",
                             hovertemplate="trial %{customdata}: %{y} (interval %{x})"
                                           "<extra></extra>")
            changed.add(name)
        if changed:
            one_each = len(self._curves) <= len(COLORS)
            chart.redraw(**self.charts.options, only=changed,
                         extra={"showlegend": len(self._curves) > 1 and one_each})

    def _render_best_so_far(self) -> None:
        maximize = (self.state.get("primary_metric") or {}).get("goal", "Maximize") == "Maximize"
        ended = sorted((t for t in self.state.get("trials") or []
                        if t["status"] in TERMINAL_STATUSES and t["metric"] is not None),
                       key=lambda t: (t.get("ended") or "", t["index"]))
        xs = list(range(1, len(ended) + 1))
        values = [t["metric"] for t in ended]
        running: list[float] = []
        for v in values:
            running.append(v if not running else (max if maximize else min)(running[-1], v))
        chart = self._figures["best"]
        chart.set_series("trial", xs, values, customdata=[t["index"] for t in ended],
                         mode="markers", color="#6b7280",
                         hovertemplate="trial %{customdata}: %{y}<extra></extra>")
        chart.set_series("best so far", xs, running, mode="lines", color="#16a34a",
                         line={"shape": "hv", "width": 2.5})
        chart.redraw(**self.charts.options)

    def _render_parcoords(self) -> None:
        trials = [t for t in self.state.get("trials") or [] if t["metric"] is not None]
        key = [(t["index"], t["metric"]) for t in trials]
        if key == self._parcoords_key or not trials:
            return
        self._parcoords_key = key
        metric = (self.state.get("primary_metric") or {}).get("name", "metric")
        dims = []
        for p in self.state.get("parameters") or []:
            values = [t["params"].get(p) for t in trials]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                dims.append({"label": p, "values": values})
            else:  # categorical: positions with the values as tick labels
                labels = sorted({str(v) for v in values})
                dims.append({"label": p, "values": [labels.index(str(v)) for v in values],
                             "tickvals": list(range(len(labels))), "ticktext": labels})
        scores = [t["metric"] for t in trials]
        dims.append({"label": metric, "values": scores})
        fig = self._figures["parcoords"].fig
        with fig.batch_update():
            fig.data[0].dimensions = dims
            fig.data[0].line = {"color": scores, "colorscale": PARCOORDS_COLORS,
                                "showscale": True}

    # -- interaction (on the kernel's main thread) ---------------------------------------

    def _on_select(self, change: dict[str, Any]) -> None:
        run_id = change["new"]
        for child in self.detail.children:  # the previous trial's widget stops following
            follower = getattr(child, "follower", None)
            if follower is not None:
                follower.stop()
        if not run_id:
            self.detail.children = ()
            return
        from jupyter_compute.runs import Run
        from jupyter_compute.widgets.run import RunWidget

        run = Run.get(run_id, self.sweep.workspace)
        self.detail.children = (RunWidget(run),)

    def _on_cancel(self, _button: Any) -> None:
        self.cancel_button.disabled = True
        self.cancel_button.description = "Canceling…"
        threading.Thread(target=self.sweep.cancel, daemon=True).start()

    # -- display -------------------------------------------------------------------------

    def summary(self) -> Any:
        """The widget's current state as a static summary (text/HTML)."""
        return SweepSummary(self.state)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        summary = self.summary().bundle()
        bundle["text/html"] = summary["text/html"]
        bundle["text/plain"] = summary["text/plain"]
        return bundle


def _status(trial: dict[str, Any]) -> str:
    """A trial's status as people read it: "Stopped early" when its policy stopped it."""
    if trial["status"] == "Canceled" and str(trial.get("stop_reason") or "").startswith(
            "stopped early"):
        return STOPPED
    return str(trial["status"])


def _arguments_html(arguments: list[str]) -> str:
    """``--lr 0.4 --depth 3`` with each ``--name value`` pair kept on one line."""
    pairs: list[str] = []
    for arg in arguments:
        if pairs and not arg.startswith("--") and pairs[-1].startswith("--") and \
                " " not in pairs[-1]:
            pairs[-1] += " " + arg
        else:
            pairs.append(arg)
    return " ".join(f'<code style="white-space:nowrap">{html.escape(p)}</code>' for p in pairs)


class _Follower(PollingThread):
    """Reads the sweep's folder on a daemon thread and hands changes to the widget."""

    def __init__(self, widget: SweepWidget, interval: float) -> None:
        super().__init__(f"follow-{widget.sweep.id}", interval)
        self.widget = widget
        self.folder = widget.sweep.folder
        self.offset = 0
        self.stamp: tuple[int, int] | None = None
        self._status_at = 0.0

    def tick(self) -> bool:
        state, points, done = self.poll()
        if state is not None or points or self.widget._charts_due:
            self.widget._apply(state or self.widget.state, points)
        return done and not self.widget._charts_due

    def poll(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]], bool]:
        """One read: the new state (None if unchanged), new points, and whether done."""
        from jupyter_compute import protocol
        from jupyter_compute.sweep.controller import POINTS, STATE

        state = None
        try:
            st = (self.folder / STATE).stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self.stamp:
            state = protocol.read_json(str(self.folder / STATE))
            self.stamp = stamp
        try:
            with open(self.folder / POINTS, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        points, used = protocol.whole_json_lines(data)
        self.offset += used
        done = False
        now = time.monotonic()
        current = state or self.widget.state
        if current.get("status") in TERMINAL_STATUSES:
            done = True
        elif now - self._status_at >= 1.0:  # a controller that died never writes its end
            self._status_at = now
            status = self.widget._run.status().value
            if status in TERMINAL_STATUSES:
                state = dict(current, status=status)
                done = True
        return state, points, done

