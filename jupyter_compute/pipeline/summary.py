"""A pipeline at one moment as text and HTML: a line (a row) per step.

The view of last resort (a terminal, ``show``, a notebook without widgets); the
live widget and the drawn DAG are the faces' (``widgets/``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from jupyter_compute.summary import StaticSummary

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def step_state(step: dict[str, Any]) -> str:
    """``Completed (reused)``, ``Skipped: step 'train' Failed`` …"""
    if step.get("reused"):
        return f"{step['status']} (reused {step.get('run_id')})"
    if step["status"] == "Skipped" and step.get("reason"):
        return f"Skipped ({step['reason'].removeprefix('skipped: ')})"
    return str(step["status"])


@dataclass
class PipelineSummary(StaticSummary):
    pipeline_id: str
    name: str
    status: str
    started: str | None
    ended: str | None
    error: str | None
    steps: list[dict[str, Any]] = field(default_factory=list)

    def text(self) -> str:
        lines = [f"pipeline {self.name} ({self.pipeline_id}): {self.status}"]
        width = max((len(s["name"]) for s in self.steps), default=4)
        for s in self.steps:
            after = f"  after {', '.join(s['depends_on'])}" if s.get("depends_on") else ""
            lines.append(f"  {s['name']:<{width}}  {s['target']:<10} {step_state(s)}"
                         f"{'  ' + s['run_id'] if s.get('run_id') and not s.get('reused') else ''}"
                         f"{after}")
        if self.error:
            lines.append(f"error: {self.error}")
        return "\n".join(lines)

    def html(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(s['name'])}</td><td>{html.escape(s['target'])}</td>"
            f"<td>{html.escape(step_state(s))}</td>"
            f"<td>{html.escape(', '.join(s.get('depends_on') or []))}</td>"
            f"<td><code>{html.escape(s.get('run_id') or '')}</code></td></tr>"
            for s in self.steps)
        error = f"<div>error: {html.escape(self.error)}</div>" if self.error else ""
        return (f"<div class='jc-pipeline'><b>pipeline {html.escape(self.name)}</b> "
                f"<code>{html.escape(self.pipeline_id)}</code>: {html.escape(self.status)}"
                f"<table><tr><th>step</th><th>target</th><th>status</th><th>after</th>"
                f"<th>run</th></tr>{rows}</table>{error}</div>")
