"""The static summary of a run: status, the log's tail and the last metric values.

It is what a saved notebook shows where widgets do not render (GitHub, nbviewer,
``jupyter nbconvert``, VS Code without the widget extension, papermill output),
and what a terminal IPython prints. No ipywidgets here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runs import Run

STATUS_COLORS = {
    "Queued": "#6b7280", "Preparing": "#2563eb", "Running": "#2563eb",
    "Completed": "#16a34a", "Failed": "#dc2626", "Canceled": "#a16207", "TimedOut": "#c2410c",
}
TAIL_LINES = 15


@dataclass
class Summary:
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

    @classmethod
    def of(cls, run: Run, tail_lines: int = TAIL_LINES) -> Summary:
        """Read a run's current state (status, log tail, last metrics) into a summary."""
        status = run.status().value
        tail = deque(run.log().splitlines(), maxlen=tail_lines)
        last = {name: (recs[-1]["value"], recs[-1]["step"])
                for name, recs in run.metrics().items() if recs[-1]["kind"] == "scalar"}
        r = run.record
        return cls(r.id, r.name, r.target, status, r.started, r.ended, r.error, list(tail), last)

    def elapsed(self) -> str:
        if not self.started:
            return ""
        start = datetime.fromisoformat(self.started)
        end = datetime.fromisoformat(self.ended) if self.ended else datetime.now(timezone.utc)
        secs = max(0.0, (end - start).total_seconds())
        if secs < 60:
            return f"{secs:.1f}s"
        minutes, secs = divmod(int(secs), 60)
        return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"

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
            parts.append('<pre style="max-height:16em;overflow:auto;margin:4px 0">'
                         f'{e(chr(10).join(self.log_tail))}</pre>')
        parts.append("</div>")
        return "".join(parts)

    def bundle(self) -> dict[str, str]:
        return {"text/plain": self.text(), "text/html": self.html()}


def _escape(text: str) -> str:
    # html (and html.entities) load only when HTML is rendered: the CLI prints sizes
    # through this module on its latency-critical submit path.
    import html

    return html.escape(text)


def human_size(n: float) -> str:
    """``2187`` → ``"2.2 kB"``: sizes as the CLI and the widgets show them (SI units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def format_value(value: Any) -> str:
    """A metric value as people read it: ``0.9123`` for floats, ``-`` for none yet."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)
