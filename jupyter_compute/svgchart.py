"""Line charts as inline SVG text, for the static summaries a saved notebook keeps.

::

    from jupyter_compute.svgchart import line_chart

    svg = line_chart({"loss": ([0, 1, 2], [0.9, 0.5, 0.3])}, title="loss", x_label="step")

Standard library only, no browser and no kaleido: a summary is drawn in the kernel
when a view ends or its kernel goes away, and must cost milliseconds. Text and axes
use ``currentColor`` so the chart follows the page's light or dark theme. Integer x
values get integer ticks only; a single point gets a range around it, not -0.5..1;
each series has its own colour and, when there are several, a legend entry.
"""

from __future__ import annotations

import math
from html import escape

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

#: One colour per series, in order (Tableau 10: distinct on light and dark pages).
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
MAX_LEGEND = 10  # series named in the legend; more are summed up as "+N more"
MAX_POINTS = 400  # per series: more are thinned evenly (the shape is kept)

Series = tuple["Sequence[Any]", "Sequence[Any]"]  # xs, ys: numbers


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2 or 5 × 10^k) from the round
    value at or below ``lo`` to the one at or above ``hi``.

    >>> nice_ticks(0, 1)
    [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    >>> nice_ticks(1, 3, integer=True)
    [1.0, 2.0, 3.0]
    """
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(count, 1)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, math.ceil(step))
    first = math.floor(lo / step + 1e-9) * step  # the axis starts at a round value
    ticks: list[float] = []
    value = first
    while not ticks or ticks[-1] < hi - step * 1e-9:
        ticks.append(round(value, 10))  # 0.6, not 0.6000000000000001
        value = first + len(ticks) * step
    return ticks


def fit_ticks(lo: float, hi: float, ticks: list[float]) -> tuple[float, float, list[float]]:
    """The axis from ``lo`` to ``hi``, stretched to an outer tick when it is close
    (under a third of a step away), and the ticks on it: a step axis ending at 11
    stops there rather than at 15.

    >>> fit_ticks(0, 11, [0, 5, 10, 15])
    (0, 11, [0, 5, 10])
    """
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    if ticks[0] < lo and lo - ticks[0] < step / 3:
        lo = ticks[0]
    if ticks[-1] > hi and ticks[-1] - hi < step / 3:
        hi = ticks[-1]
    inside = [t for t in ticks if lo - 1e-9 <= t <= hi + 1e-9]
    if not inside:  # a range narrower than a step: keep the nearest tick on the axis
        inside = ticks[:1]
        lo, hi = min(lo, inside[0]), max(hi, inside[0])
    return lo, hi, inside


def value_range(values: Sequence[float], integer: bool = False) -> tuple[float, float]:
    """The axis range for ``values``: their span, padded; around a lone value, ±10 %
    of it (±1 for zero or integers) rather than a made-up unit interval."""
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = 1.0 if integer or lo == 0 else abs(lo) * 0.1
        return lo - pad, hi + pad
    pad = 0.0 if integer else (hi - lo) * 0.05
    return lo - pad, hi + pad


def format_tick(value: float) -> str:
    """``3`` not ``3.0``; ``0.25``; ``1.2e+04`` for big or tiny numbers."""
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


def line_chart(series: Mapping[str, Series], title: str = "", x_label: str = "step",
               width: int = 340, height: int = 200, guides: dict[str, float] | None = None,
               steps: bool = False, bold: Sequence[str] = (),
               dashed: Sequence[str] = ()) -> str:
    """An SVG line chart of ``{name: (xs, ys)}``: one colour per series, markers on
    every point when there are few (so a single point shows), a legend when there are
    several series, and dashed horizontal ``guides`` (``{"max": 4}``). ``steps`` draws
    step lines (counts that hold until they change); ``bold`` series are drawn thicker
    and on top (the best trial), ``dashed`` ones dashed (so a line they hide shows
    through). Empty input gives ``""``."""
    series = {name: _thin(xs, ys) for name, (xs, ys) in series.items() if len(xs) and len(ys)}
    if not series:
        return ""
    all_x = [float(x) for xs, _ in series.values() for x in xs]
    all_y = [float(y) for _, ys in series.values() for y in ys if _finite(y)]
    all_y += list((guides or {}).values())
    if not all_y:
        return ""
    int_x = all(x == int(x) for x in all_x)
    int_y = all(y == int(y) for y in all_y) and steps
    x_lo, x_hi = value_range(all_x, integer=int_x)
    y_lo, y_hi = value_range(all_y, integer=int_y)
    if int_y:
        y_lo = min(y_lo, 0.0) if min(all_y) >= 0 else y_lo
    x_lo, x_hi, x_ticks = fit_ticks(x_lo, x_hi, nice_ticks(x_lo, x_hi, 5, integer=int_x))
    y_lo, y_hi, y_ticks = fit_ticks(y_lo, y_hi, nice_ticks(y_lo, y_hi, 4, integer=int_y))

    names = list(series)
    legend = names[:MAX_LEGEND] if len(names) > 1 else []
    left, right, top = 46, 10, 22 if title else 8
    legend_rows = (len(legend) + 2) // 3 + (len(names) > MAX_LEGEND)
    bottom = 34 + (8 + 14 * legend_rows if legend else 0)
    plot_w, plot_h = width - left - right, height - top - bottom
    if plot_h < 40:  # a long legend: grow the chart rather than squash the plot
        height += 40 - plot_h
        plot_h = 40

    def sx(x: float) -> float:
        return left + plot_w * (x - x_lo) / (x_hi - x_lo)

    def sy(y: float) -> float:
        return top + plot_h - plot_h * (y - y_lo) / (y_hi - y_lo)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10" '
           f'role="img" aria-label="{escape(title or "chart")}" '
           f'style="color:inherit;overflow:visible">']
    if title:
        out.append(f'<text x="{left}" y="13" font-size="12" font-weight="bold" '
                   f'fill="currentColor">{escape(title)}</text>')
    for y in y_ticks:
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" '
                   f'stroke="currentColor" stroke-opacity="0.12"/>'
                   f'<text x="{left - 4}" y="{sy(y) + 3:.1f}" text-anchor="end" '
                   f'fill="currentColor" fill-opacity="0.75">{format_tick(y)}</text>')
    for x in x_ticks:
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top + plot_h}" '
                   f'y2="{top + plot_h + 3}" stroke="currentColor" stroke-opacity="0.5"/>'
                   f'<text x="{sx(x):.1f}" y="{top + plot_h + 13}" text-anchor="middle" '
                   f'fill="currentColor" fill-opacity="0.75">{format_tick(x)}</text>')
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
               f'y2="{top + plot_h}" stroke="currentColor" stroke-opacity="0.5"/>')
    out.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 26}" '
               f'text-anchor="middle" fill="currentColor" fill-opacity="0.75">'
               f'{escape(x_label)}</text>')
    for name, level in (guides or {}).items():
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(level):.1f}" '
                   f'y2="{sy(level):.1f}" stroke="currentColor" stroke-opacity="0.5" '
                   f'stroke-dasharray="3,3"/><text x="{left + plot_w - 2}" '
                   f'y="{sy(level) - 3:.1f}" text-anchor="end" fill="currentColor" '
                   f'fill-opacity="0.75">{escape(name)} {format_tick(level)}</text>')
    order = sorted(enumerate(series.items()), key=lambda item: item[1][0] in bold)
    for i, (name, (xs, ys)) in order:
        color = PALETTE[i % len(PALETTE)]
        width_ = 3.0 if name in bold else 1.8
        dash = ' stroke-dasharray="5,3"' if name in dashed else ""
        points = [(sx(float(x)), sy(float(y))) for x, y in zip(xs, ys) if _finite(y)]
        if steps:
            stepped: list[tuple[float, float]] = []
            for j, (px, py) in enumerate(points):
                if j:
                    stepped.append((px, stepped[-1][1]))
                stepped.append((px, py))
            points = stepped
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="{width_}"{dash} '
                   f'points="{path}"><title>{escape(name)}</title></polyline>')
        if len(xs) <= 30:
            out.extend(f'<circle cx="{sx(float(x)):.1f}" cy="{sy(float(y)):.1f}" r="2.5" '
                       f'fill="{color}"><title>{escape(name)}: {format_tick(float(y))}</title>'
                       f'</circle>' for x, y in zip(xs, ys) if _finite(y))
    legend_top = top + plot_h + 40
    for i, name in enumerate(legend):
        col, row = i % 3, i // 3
        x, y = left + col * (plot_w / 3), legend_top + row * 14
        label = name if len(name) <= 18 else name[:17] + "…"
        out.append(f'<rect x="{x:.1f}" y="{y - 7:.1f}" width="10" height="3" '
                   f'fill="{PALETTE[i % len(PALETTE)]}"/><text x="{x + 14:.1f}" y="{y:.1f}" '
                   f'fill="currentColor">{escape(label)}</text>')
    if len(names) > MAX_LEGEND:
        y = legend_top + 14 * ((len(legend) + 2) // 3)
        out.append(f'<text x="{left}" y="{y}" fill="currentColor" fill-opacity="0.75">'
                   f'+{len(names) - MAX_LEGEND} more</text>')
    out.append("</svg>")
    return "".join(out)


def _thin(xs: Sequence[float], ys: Sequence[float]) -> tuple[list[float], list[float]]:
    n = min(len(xs), len(ys))
    if n <= MAX_POINTS:
        return list(xs[:n]), list(ys[:n])
    keep = sorted({round(i * (n - 1) / (MAX_POINTS - 1)) for i in range(MAX_POINTS)})
    return [xs[i] for i in keep], [ys[i] for i in keep]


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
