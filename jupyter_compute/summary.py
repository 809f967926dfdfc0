"""Static summaries: a run's status, log tail, metric charts and outputs; a sweep's
trials table and curves; a pipeline's steps as a graph; a cluster's node counts over
time.

They are the final state of every notebook display: when a live view ends, or its
kernel goes away, its output becomes this bundle (``jupyter_compute.widgets.live``),
so a saved notebook shows the result in JupyterLab, Notebook 7, VS Code and
nbconvert alike. They are also what a terminal IPython prints and what
``jupyter-compute show`` prints for a sweep. Plain text and HTML (charts as inline
SVG, ``jupyter_compute.svgchart``) from the standard library: no ipywidgets here,
so the core (``Run.summary()``, ``Sweep.summary()``) uses them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from jupyter_compute import svgchart
from jupyter_compute.units import format_duration, format_size

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

STATUS_COLORS = {
    "Queued": "#6b7280", "Preparing": "#2563eb", "Running": "#2563eb",
    "Completed": "#16a34a", "Failed": "#dc2626", "Canceled": "#a16207", "TimedOut": "#c2410c",
}


class StaticSummary:
    """Text and HTML of one moment; displayed as such where widgets do not render."""

    def text(self) -> str:
        raise NotImplementedError

    def html(self) -> str:
        raise NotImplementedError

    def bundle(self) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self.html()}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return self.bundle()


@dataclass
class Summary(StaticSummary):
    """What is known of a run at one moment, rendered as text or HTML."""

    run_id: str
    name: str
    target: str
    status: str
    started: str | None = None
    ended: str | None = None
    error: str | None = None
    log_tail: list[str] = field(default_factory=list)
    last_metrics: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name → (value, step)
    nodes: str | None = None
    series: dict[str, tuple[list[Any], list[Any]]] = field(default_factory=dict)  # name → xs, ys
    outputs: list[tuple[str, int]] = field(default_factory=list)  # (path, size) in outputs/

    def __post_init__(self) -> None:
        # Lines may come with their newline (a follower's tail) or without (splitlines):
        # keep none, so no line is doubled; a progress bar's \r updates show their last.
        self.log_tail = [_last_segment(line) for line in self.log_tail]

    def elapsed(self) -> str:
        if not self.started:
            return ""
        start = datetime.fromisoformat(self.started)
        end = datetime.fromisoformat(self.ended) if self.ended else datetime.now(timezone.utc)
        return format_duration((end - start).total_seconds())

    def metrics_line(self) -> str:
        return " · ".join(f"{name} {format_value(value)}"
                          + ("" if step is None else f" (step {step})")
                          for name, (value, step) in self.last_metrics.items())

    def text(self) -> str:
        head = f"Run {self.run_id} · {self.name} · {self.target} · {self.status}"
        lines = [head + (f" · {self.elapsed()}" if self.started else "")]
        if self.nodes:
            lines.append(f"  nodes {self.nodes}")
        if self.metrics_line():
            lines.append("  " + self.metrics_line())
        if self.error and self.status != "Completed":
            lines.append("  error: " + self.error.strip().splitlines()[-1])
        lines.extend("  | " + line for line in self.log_tail)
        if self.outputs:
            lines.append("  outputs: " + ", ".join(
                f"{name} ({format_size(size)})" for name, size in self.outputs[:MAX_OUTPUTS]))
        return "\n".join(lines)

    def badge(self) -> str:
        color = STATUS_COLORS.get(self.status, "#6b7280")
        return (f'<span style="background:{color};color:white;border-radius:9px;'
                f'padding:1px 8px;font-size:0.85em">{_escape(self.status)}</span>')

    def html(self) -> str:
        e = _escape
        parts = [f'<div class="jupyter-compute-run" style="font-family:var(--jp-ui-font-family,'
                 f'sans-serif)"><b>{e(self.name)}</b> <code>{e(self.run_id)}</code> on '
                 f'<b>{e(self.target)}</b> {self.badge()} {e(self.elapsed())}']
        if self.nodes:
            parts.append(f"<div>nodes {e(self.nodes)}</div>")
        if self.metrics_line():
            parts.append(f"<div>{e(self.metrics_line())}</div>")
        if self.error and self.status != "Completed":
            parts.append(f'<div style="color:#dc2626">{e(self.error.strip().splitlines()[-1])}'
                         "</div>")
        if self.log_tail:
            parts.append('<pre style="overflow-x:auto;margin:4px 0;'
                         'padding:4px 6px;line-height:1.35;white-space:pre-wrap;'
                         'background:var(--jp-layout-color2,rgba(127,127,127,0.08))">'
                         f'{e(chr(10).join(self.log_tail))}</pre>')
        charts = [svgchart.line_chart({name: (xs, ys)}, title=name)
                  for name, (xs, ys) in list(self.series.items())[:MAX_CHARTS]]
        parts.append(charts_html(charts))
        parts.append(outputs_html(self.outputs))
        parts.append("</div>")
        return "".join(parts)


class SweepSummary(StaticSummary):
    """What a saved notebook or a terminal shows of a sweep: a table of trials (status,
    reason, metric) and, given the controller's ``points``, the primary metric per trial."""

    MAX_ROWS = 50

    def __init__(self, state: dict[str, Any], points: list[dict[str, Any]] | None = None
                 ) -> None:
        self.state = state
        self.points = points or []  # {"trial", "interval", "value"}: trials.jsonl

    def rows(self) -> list[dict[str, Any]]:
        """Trials, best first (by the primary metric), then those without a value."""
        goal = (self.state.get("primary_metric") or {}).get("goal", "Maximize")
        sign = -1 if goal == "Maximize" else 1
        trials = self.state.get("trials") or []
        return sorted(trials, key=lambda t: (t["metric"] is None,
                                             sign * (t["metric"] or 0), t["index"]))

    def head(self) -> str:
        s = self.state
        metric = s.get("primary_metric") or {}
        trials = s.get("trials") or []
        running = sum(t["status"] in ("Queued", "Preparing", "Running") for t in trials)
        stopped = sum(bool(t.get("stop_reason")) and t["status"] == "Canceled" for t in trials)
        best = s.get("best")
        parts = [f"Sweep {s.get('id')} · {s.get('script')} on {s.get('target')} · "
                 f"{s.get('status')}",
                 f"{len(trials)}/{s.get('max_total_runs')} trials · {running} running · "
                 f"{stopped} stopped early · {s.get('sampling')} · {s.get('policy')}"]
        if best:
            parts.append(f"best: trial {best['index']} {best['run_id']} "
                         f"{metric.get('name')} {format_value(best['metric'])} "
                         f"({' '.join(best['arguments'])})")
        return "\n".join(parts)

    def text(self) -> str:
        metric = (self.state.get("primary_metric") or {}).get("name", "metric")
        lines = [self.head()]
        lines += [f"  WARNING: {w}" for w in self.state.get("warnings") or []]
        rows = self.rows()[:self.MAX_ROWS]
        if rows:
            table = [("#", "RUN", "PARAMETERS", "STATUS", metric, "REASON")]
            table += [(str(t["index"]), t["run_id"] or "-", " ".join(t["arguments"]),
                       trial_status(t), format_value(t["metric"]), t.get("stop_reason") or "")
                      for t in rows]
            widths = [max(len(r[i]) for r in table) for i in range(5)]
            lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5]
                      for r in table]
        return "\n".join(line.rstrip() for line in lines)

    def html(self) -> str:
        e = _escape
        s = self.state
        best = (s.get("best") or {}).get("index")
        metric = (s.get("primary_metric") or {}).get("name", "metric")
        head = e(self.head()).replace("\n", "<br>")
        parts = [f'<div class="jupyter-compute-sweep"><div>{head}</div>']
        for w in s.get("warnings") or []:
            parts.append(f'<div style="color:#b45309"><b>⚠ warning:</b> {e(w)}</div>')
        cells = []
        for t in self.rows()[:self.MAX_ROWS]:
            color = STATUS_COLORS.get(t["status"], "#6b7280")
            status = trial_status(t)
            # Translucent: readable under the light and the dark theme's text colour.
            style = (' style="font-weight:bold;background:rgba(22,163,74,0.18)"'
                     if t["index"] == best else "")
            cells.append(
                f"<tr{style}><td>{t['index']}</td><td><code>{e(t['run_id'] or '-')}</code></td>"
                f"<td><code>{e(' '.join(t['arguments']))}</code></td>"
                f'<td style="color:{color}">{e(status)}</td>'
                f'<td>{format_value(t["metric"])}</td>'
                f"<td>{e(t.get('stop_reason') or t.get('error') or '')[:200]}</td></tr>")
        if cells:
            parts.append('<div style="max-width:100%;overflow-x:auto">'
                         "<table><thead><tr><th>#</th><th>run</th><th>parameters</th>"
                         f"<th>status</th><th>{e(metric)}</th><th>reason</th></tr></thead>"
                         f"<tbody>{''.join(cells)}</tbody></table></div>")
        parts.append(charts_html([self.chart()]))
        parts.append("</div>")
        return "".join(parts)

    def chart(self) -> str:
        """The primary metric against the interval, one coloured line per trial; a trial
        stopped after one report is one dot, so every trial shows."""
        metric = (self.state.get("primary_metric") or {}).get("name", "metric")
        curves: dict[int, tuple[list[Any], list[Any]]] = {}
        for p in self.points:
            xs, ys = curves.setdefault(int(p["trial"]), ([], []))
            xs.append(p["interval"])
            ys.append(p["value"])
        for t in self.state.get("trials") or []:  # a trial's last value, if no curve
            if t.get("metric") is not None and t["index"] not in curves:
                curves[t["index"]] = ([t.get("intervals") or 1], [t["metric"]])
        series = {f"trial {index}": curves[index] for index in sorted(curves)}
        best = (self.state.get("best") or {}).get("index")
        return svgchart.line_chart(series, title=f"{metric} per trial", x_label="interval",
                                   width=420, height=240, bold=[f"trial {best}"])


class PipelineSummary(StaticSummary):
    """What a saved notebook or a terminal shows of a pipeline: its steps as a graph
    (``svgdag``) coloured by state, and a table of them (state, target, run, reason).

    ``state`` is the ``show --json`` shape of a pipeline (``Pipeline.to_dict()``): id,
    name, status, started, ended, error and ``steps`` (``Pipeline.steps()``).

    >>> PipelineSummary({"id": "p1", "name": "etl", "status": "Completed",
    ...                  "steps": [{"name": "prep", "status": "Completed"}]}).counts()
    '1 step: 1 completed'
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        self.steps: list[dict[str, Any]] = list(state.get("steps") or [])

    def counts(self) -> str:
        """How many steps are in each state, most advanced first: ``5 steps: 2
        completed · 1 reused · 1 running · 1 not started``."""
        from jupyter_compute.svgdag import state_label, step_state

        order = ["Completed", "Reused", "Running", "Preparing", "Queued", "Failed",
                 "Canceled", "TimedOut", "Skipped", "NotStarted"]
        found: dict[str, int] = {}
        for step in self.steps:
            state = step_state(step)
            found[state] = found.get(state, 0) + 1
        ranked = sorted(found, key=lambda s: order.index(s) if s in order else len(order))
        n = len(self.steps)
        if not n:
            return "no steps yet"
        return f"{n} step{'' if n == 1 else 's'}: " + " · ".join(
            f"{found[s]} {state_label(s).lower()}" for s in ranked)

    def elapsed(self) -> str:
        s = self.state
        return Summary("", "", "", "", started=s.get("started"), ended=s.get("ended")).elapsed()

    def head(self) -> str:
        s = self.state
        elapsed = self.elapsed()
        return (f"Pipeline {s.get('id')} · {s.get('name')} · {s.get('status')}"
                + (f" · {elapsed}" if elapsed else ""))

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """One row per step: name, state, kind and target, what it runs after, its run,
        and why it failed, was skipped or was reused."""
        from jupyter_compute.svgdag import state_label, step_state

        rows = []
        for step in self.steps:
            state = step_state(step)
            note = str(step.get("reason") or step.get("error") or "").removeprefix("skipped: ")
            if step.get("reused_from"):
                note = note or f"reused from {step['reused_from']}"
            note = str(note).strip().splitlines()[-1][:200] if str(note).strip() else ""
            where = " on ".join(str(step[k]) for k in ("kind", "target") if step.get(k))
            rows.append((str(step.get("name")), state_label(state), where,
                         ", ".join(map(str, step.get("depends_on") or ())) or "-",
                         str(step.get("run_id") or "-"), note))
        return rows

    def text(self) -> str:
        lines = [self.head(), "  " + self.counts()]
        error = self.state.get("error")
        if error and self.state.get("status") != "Completed":
            lines.append("  error: " + str(error).strip().splitlines()[-1])
        # What a step runs after goes with its note: "after prep · exited with code 3".
        table = [("STEP", "STATE", "WHERE", "RUN", "NOTE")] + [
            (name, state, where, run, " · ".join(filter(None, (
                f"after {after}" if after != "-" else "", note))))
            for name, state, where, after, run, note in self.rows()]
        widths = [max(len(r[i]) for r in table) for i in range(4)]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4]
                  for r in table]
        return "\n".join(line.rstrip() for line in lines)

    def header_html(self) -> str:
        """Name, id, status badge and time; the counts of steps by state; the error."""
        e = _escape
        s = self.state
        badge = Summary("", "", "", str(s.get("status"))).badge()
        parts = [f"<div><b>{e(str(s.get('name')))}</b> <code>{e(str(s.get('id')))}</code> "
                 f"pipeline {badge} {e(self.elapsed())}</div><div>{e(self.counts())}</div>"]
        error = s.get("error")
        if error and s.get("status") != "Completed":
            parts.append(f'<div style="color:#dc2626">{e(str(error).strip().splitlines()[-1])}'
                         "</div>")
        return "".join(parts)

    def table_html(self) -> str:
        """The steps as a table: state (in its colour), where, after, run, note."""
        from jupyter_compute.svgdag import STATE_COLORS, step_state

        e = _escape
        left = ' style="text-align:left"'  # JupyterLab right-aligns table cells: names read left
        cells = []
        for (name, state, where, after, run, note), step in zip(self.rows(), self.steps):
            color = STATE_COLORS.get(step_state(step), "#6b7280")
            cells.append(f"<tr><td{left}><b>{e(name)}</b></td>"
                         f'<td style="text-align:left;color:{color}">{e(state)}</td>'
                         f"<td{left}>{e(where)}</td><td{left}>{e(after)}</td>"
                         f"<td{left}><code>{e(run)}</code></td><td{left}>{e(note)}</td></tr>")
        if not cells:
            return ""
        return ('<div style="max-width:100%;overflow-x:auto">'
                '<table class="jc-steps"><thead><tr>'
                + "".join(f"<th{left}>{h}</th>" for h in ("step", "state", "where", "after",
                                                          "run", "note"))
                + "</tr></thead>"
                f"<tbody>{''.join(cells)}</tbody></table></div>")

    def html(self) -> str:
        from jupyter_compute.svgdag import dag_svg

        svg = dag_svg(self.steps)
        graph = f'<div style="max-width:100%;overflow-x:auto;margin:6px 0">{svg}</div>' \
            if svg else ""
        return (f'<div class="jupyter-compute-pipeline">{self.header_html()}{graph}'
                f"{self.table_html()}</div>")


@dataclass
class ClusterSummary(StaticSummary):
    """A cluster target's node counts, and their history as a chart when known:
    ``points`` are ``(unix time, current, pending)``."""

    name: str
    nodes: dict[str, Any] | None
    points: list[tuple[float, int, int]] = field(default_factory=list)

    def text(self) -> str:
        text = counts_text(self.name, self.nodes)
        if self.points:  # a saved notebook says when the counts were true
            text += " · as of " + datetime.fromtimestamp(self.points[-1][0]).strftime(
                "%Y-%m-%d %H:%M:%S")
        return text

    def html(self) -> str:
        text = f"<div><code>{_escape(self.text())}</code></div>"
        return f'<div class="jupyter-compute-cluster">{text}{charts_html([self.chart()])}</div>'

    def chart(self) -> str:
        """Current and pending nodes against seconds since the first point, min/max marked."""
        if len(self.points) < 2:
            return ""
        t0 = self.points[0][0]
        xs = [round(t - t0) for t, _, _ in self.points]
        nodes = self.nodes or {}
        guides = {k: float(nodes[k]) for k in ("min", "max") if nodes.get(k) is not None}
        return svgchart.line_chart(
            {"current": (xs, [c for _, c, _ in self.points]),
             "pending": (xs, [p for _, _, p in self.points])},
            title=f"{self.name} nodes", x_label="seconds", guides=guides, steps=True,
            bold=["current"], dashed=["pending"])


def trial_status(trial: dict[str, Any]) -> str:
    """A trial's status as people read it: "Stopped early" when its policy stopped it."""
    if trial.get("stop_reason") and trial["status"] == "Canceled":
        return "Stopped early"
    return str(trial["status"])


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


MAX_CHARTS = 12   # metric charts a run's summary draws
MAX_OUTPUTS = 50  # output files it lists


def charts_html(charts: list[str]) -> str:
    """SVG charts side by side, wrapping to the cell's width instead of overflowing."""
    charts = [c for c in charts if c]
    if not charts:
        return ""
    return ('<div style="display:flex;flex-wrap:wrap;gap:8px 16px;margin:6px 0;'
            'max-width:100%">' + "".join(f"<div>{c}</div>" for c in charts) + "</div>")


def outputs_html(outputs: list[tuple[str, int]]) -> str:
    """The run's output files (path and size), the first ``MAX_OUTPUTS`` of them."""
    if not outputs:
        return ""
    items = "".join(f"<li><code>{_escape(name)}</code> ({format_size(size)})</li>"
                    for name, size in outputs[:MAX_OUTPUTS])
    more = (f"<li>… {len(outputs) - MAX_OUTPUTS} more</li>"
            if len(outputs) > MAX_OUTPUTS else "")
    return f"<div><b>outputs</b><ul style='margin:2px 0'>{items}{more}</ul></div>"


def _last_segment(line: str) -> str:
    line = line.rstrip("\r\n")
    return line.rsplit("\r", 1)[-1] if "\r" in line else line


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def _escape(text: str) -> str:
    # html (and html.entities) load only when HTML is rendered, not for a terminal.
    import html

    return html.escape(text)


def format_value(value: Any) -> str:
    """A metric value as people read it: ``0.9123`` for floats, ``-`` for none yet."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
