"""A pipeline's steps as an inline SVG graph: one box per step, coloured by its state,
arrows from each step to those that depend on it.

::

    from jupyter_compute.svgdag import dag_svg

    svg = dag_svg([{"name": "prep", "status": "Completed", "reused": True, "depends_on": []},
                   {"name": "train", "status": "Running", "depends_on": ["prep"]}])

One drawing for every place a pipeline shows: the live ``PipelineWidget`` (which
makes its boxes clickable), the static summary a saved notebook keeps, and the
sidebar's run page. Standard library only, drawn in milliseconds. Steps flow left
to right: a step's column is one past its deepest dependency, and within a column
steps sit near the mean row of what they depend on, so a chain is a straight line
and crossings are few; an edge that skips a column runs below the boxes, never
through one. Text uses ``currentColor``, so the graph follows the page's
light or dark theme; each state's colour reads on both.
"""

from __future__ import annotations

from html import escape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

#: Each state's colour: the run statuses' (``summary.STATUS_COLORS``) and the steps' own.
STATE_COLORS = {
    "NotStarted": "#6b7280", "Queued": "#6b7280", "Preparing": "#2563eb",
    "Running": "#2563eb", "Completed": "#16a34a", "Reused": "#0d9488", "Failed": "#dc2626",
    "Canceled": "#a16207", "TimedOut": "#c2410c", "Skipped": "#6b7280",
}
#: What each state reads as, where it differs from its name.
STATE_LABELS = {"NotStarted": "Not started", "TimedOut": "Timed out"}
#: States drawn with a dashed border: nothing ran (yet, or ever).
DASHED = {"NotStarted", "Skipped"}

BOX_W, BOX_H = 168, 46      # a step's box
GAP_X, GAP_Y = 48, 14       # between columns, between rows
PAD = 6                     # around the whole graph
LANE_TOP, LANE_GAP = 6, 7   # lanes of the edges that skip columns, below the boxes
MAX_NAME = 22               # characters of a step's name shown in its box (all in its tooltip)


def step_state(step: dict[str, Any]) -> str:
    """A step's state as the graph shows it: its run status, ``"Reused"`` for a step
    that ran nothing because an identical one had completed, ``"NotStarted"``,
    ``"Skipped"``.

    >>> step_state({"status": "Completed", "reused": True})
    'Reused'
    """
    status = str(step.get("status") or "NotStarted")
    return "Reused" if step.get("reused") and status == "Completed" else status


def state_label(state: str) -> str:
    """``"Not started"`` for ``"NotStarted"``; other states read as their name."""
    return STATE_LABELS.get(state, state)


def layout(steps: Sequence[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """Each step's (column, row): columns by depth, rows ordered near their dependencies.

    >>> layout([{"name": "a"}, {"name": "b", "depends_on": ["a"]},
    ...         {"name": "c", "depends_on": ["a"]}])
    {'a': (0, 0), 'b': (1, 0), 'c': (1, 1)}
    """
    names = [str(s["name"]) for s in steps]
    known = set(names)
    deps = {str(s["name"]): [d for d in s.get("depends_on") or () if d in known]
            for s in steps}
    column: dict[str, int] = {}

    def depth(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in column:  # a cycle (bad input) must not recurse forever
            ups = [depth(d, seen | {name}) for d in deps[name] if d not in seen]
            column[name] = 1 + max(ups) if ups else 0
        return column[name]

    for name in names:
        depth(name)
    rows: dict[str, float] = {}
    placed: dict[str, tuple[int, int]] = {}
    for col in range(max(column.values(), default=-1) + 1):
        members = [n for n in names if column[n] == col]
        # Near the mean row of its dependencies; the given (topological) order breaks ties.
        members.sort(key=lambda n: (sum(rows[d] for d in deps[n]) / len(deps[n])
                                    if deps[n] else names.index(n), names.index(n)))
        for row, name in enumerate(members):
            rows[name] = row
            placed[name] = (col, row)
    return placed


def dag_svg(steps: Sequence[dict[str, Any]], selected: str = "") -> str:
    """The steps (``Pipeline.steps()`` dicts: name, status, reused, target, kind,
    depends_on, run_id) as an SVG graph; ``selected`` names a step drawn outlined.
    Each box is a ``<g class="jc-dag-step">`` with ``data-step``, ``data-run-id`` and
    ``data-state``, so a view can make it clickable. No steps gives ``""``."""
    if not steps:
        return ""
    placed = layout(steps)
    columns = max(c for c, _ in placed.values()) + 1
    per_column = [sum(1 for c, _ in placed.values() if c == col) for col in range(columns)]
    tallest = max(per_column)
    width = 2 * PAD + columns * BOX_W + (columns - 1) * GAP_X
    body = PAD + tallest * BOX_H + (tallest - 1) * GAP_Y  # the boxes end here
    # An edge that skips a column would cross that column's boxes: it runs in a lane of
    # its own below them instead, rising in the gaps between columns (which hold no box).
    long_edges = [(dep, str(s["name"])) for s in steps for dep in s.get("depends_on") or ()
                  if dep in placed and placed[str(s["name"])][0] - placed[dep][0] > 1]
    lanes = {edge: i for i, edge in enumerate(long_edges)}
    height = body + PAD + (LANE_TOP + LANE_GAP * len(lanes) if lanes else 0)

    def corner(name: str) -> tuple[float, float]:
        col, row = placed[name]
        # A column shorter than the tallest is centred, so a chain runs straight.
        offset = (tallest - per_column[col]) * (BOX_H + GAP_Y) / 2
        return PAD + col * (BOX_W + GAP_X), PAD + offset + row * (BOX_H + GAP_Y)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="jc-dag" width="{width}" '
           f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
           f'font-size="11" role="img" aria-label="pipeline steps" '
           f'style="color:inherit;overflow:visible;max-width:none">'
           '<defs><marker id="jc-dag-arrow" viewBox="0 0 8 8" refX="7" refY="4" '
           'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
           '<path d="M0,0 L8,4 L0,8 z" fill="currentColor" fill-opacity="0.55"/>'
           "</marker></defs>"]
    for step in steps:  # edges first: boxes are drawn over their ends
        name = str(step["name"])
        x2, y2 = corner(name)
        for dep in step.get("depends_on") or ():
            if dep not in placed:
                continue
            x1, y1 = corner(dep)
            ax, ay = x1 + BOX_W, y1 + BOX_H / 2
            bx, by = x2 - 1, y2 + BOX_H / 2
            if (dep, name) in lanes:
                lane = lanes[(dep, name)]
                shift = 3 * (lane % 5)  # lanes sharing a gap rise side by side
                low = body + LANE_TOP + LANE_GAP * lane
                d = (f"M{ax:.1f},{ay:.1f} H{ax + 10 + shift:.1f} V{low:.1f} "
                     f"H{bx - 12 - shift:.1f} V{by:.1f} H{bx:.1f}")
            else:
                bend = max(GAP_X / 2, (bx - ax) / 2)
                d = (f"M{ax:.1f},{ay:.1f} C{ax + bend:.1f},{ay:.1f} {bx - bend:.1f},{by:.1f} "
                     f"{bx:.1f},{by:.1f}")
            dash = ' stroke-dasharray="4,3"' if step_state(step) in DASHED else ""
            out.append(f'<path class="jc-dag-edge" d="{d}" fill="none" stroke="currentColor" '
                       f'stroke-opacity="0.45" stroke-width="1.4" stroke-linejoin="round"'
                       f'{dash} marker-end="url(#jc-dag-arrow)"/>')
    for step in steps:
        out.append(_box(step, *corner(str(step["name"])), str(step["name"]) == selected))
    out.append("</svg>")
    return "".join(out)


def _box(step: dict[str, Any], x: float, y: float, selected: bool) -> str:
    name = str(step["name"])
    state = step_state(step)
    color = STATE_COLORS.get(state, "#6b7280")
    shown = name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + "…"
    where = " · ".join(str(step[k]) for k in ("kind", "target") if step.get(k))
    tip = [f"{name}: {state_label(state)}"]
    if where:
        tip.append(where)
    if step.get("depends_on"):
        tip.append("after " + ", ".join(map(str, step["depends_on"])))
    if step.get("run_id"):
        tip.append(f"run {step['run_id']}")
    if step.get("reused_from"):
        tip.append(f"reused from {step['reused_from']}")
    reason = step.get("reason") or step.get("error")
    if reason:
        tip.append(str(reason).strip().splitlines()[-1][:300])
    dash = ' stroke-dasharray="5,3"' if state in DASHED else ""
    width = 3 if selected else 1.6
    detail = state_label(state) + (f" · {step['target']}" if step.get("target") else "")
    if len(detail) > 28:
        detail = detail[:27] + "…"
    run_id = escape(str(step.get("run_id") or ""))
    return (f'<g class="jc-dag-step" data-step="{escape(name)}" data-run-id="{run_id}" '
            f'data-state="{state}"><title>{escape(chr(10).join(tip))}</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{BOX_H}" rx="7" '
            f'fill="{color}" fill-opacity="0.14" stroke="{color}" stroke-width="{width}"'
            f"{dash}/>"
            f'<rect x="{x:.1f}" y="{y:.1f}" width="5" height="{BOX_H}" rx="2" '
            f'fill="{color}"/>'
            f'<text x="{x + 13:.1f}" y="{y + 19:.1f}" font-size="12" font-weight="bold" '
            f'fill="currentColor">{escape(shown)}</text>'
            # The state in the theme's text colour: the box's colour already says it, and
            # a coloured word on its own tint is hard to read on a dark page.
            f'<text x="{x + 13:.1f}" y="{y + 35:.1f}" fill="currentColor" '
            f'fill-opacity="0.8">{escape(detail)}</text></g>')
