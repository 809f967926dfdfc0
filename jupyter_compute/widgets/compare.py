"""``CompareWidget``: runs side by side in a notebook cell.

::

    import jupyter_compute
    from jupyter_compute.widgets.compare import CompareWidget

    CompareWidget(jupyter_compute.compare("7f3a", "9b1c"))   # or %runs --compare 7f3a 9b1c

One chart per metric with one curve per run (the same colour for a run in every
chart, a legend naming the runs; on the time axis each run starts at 0), drawn
through ``charts`` like every other widget; below them the side-by-side table and
the snapshot diff, where choosing a changed file shows its unified diff. It shows
the runs as they were when compared (compare again for newer values). The display
bundle carries the table as HTML and text for places where widgets do not render.
"""

from __future__ import annotations

import html

import ipywidgets as widgets

from jupyter_compute.exceptions import ComputeError
from jupyter_compute.widgets.charts import COLORS, Chart, ChartGrid

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.comparison import Comparison

_CHOOSE = "(choose a changed file)"
_LINE_COLORS = {"+": "#16a34a", "-": "#dc2626", "@": "#2563eb"}


class CompareWidget(widgets.VBox):
    """Each metric's curves overlaid across the runs, the table, the snapshot diff."""

    def __init__(self, comparison: Comparison, **kwargs: Any) -> None:
        self.comparison = comparison
        self.labels = run_labels(comparison)
        c = comparison
        what = f"the trials of sweep {c.sweep}" if c.sweep else f"{len(c.runs)} runs"
        self.header = widgets.HTML(f"<b>Comparing {html.escape(what)}</b>")
        self.charts = ChartGrid()
        for name, goal in c.goals.items():
            title = f"{name} ({goal.word} is best)"
            logged = [i for i, run in enumerate(c.runs) if run.curves.get(name)]
            if len(logged) == 1:  # a lone series has no legend: the title names its run
                title += f" · only {self.labels[logged[0]]}"
            chart = self.charts.add(Chart(title))
            for i, run in enumerate(c.runs):
                points = run.curves.get(name)
                if not points:
                    continue
                xs = [n if step is None else step for n, (step, _, _) in enumerate(points)]
                # On the time axis each run starts at 0: runs of different days overlay.
                times = [t - points[0][2] for _, _, t in points
                         if t is not None and points[0][2] is not None]
                chart.set_series(self.labels[i], xs, [v for _, v, _ in points],
                                 times=times if len(times) == len(points) else None,
                                 color=COLORS[i % len(COLORS)],
                                 hovertemplate=f"{html.escape(run.id)}: %{{y}} (step %{{x}})"
                                               "<extra></extra>")
        self.charts.redraw()
        self.table = widgets.HTML(c.table_html())
        self.files = widgets.Dropdown(options=[_CHOOSE, *c.changed_paths()], value=_CHOOSE,
                                      description="diff of", layout=widgets.Layout(
                                          width="auto", max_width="40em",
                                          display=None if c.changed_paths() else "none"))
        self.files.observe(self._on_file, "value")
        self.diff = widgets.HTML()
        super().__init__([self.header, self.charts, self.table,
                          widgets.HTML(c.diff_html()), self.files, self.diff], **kwargs)

    def _on_file(self, change: dict[str, Any]) -> None:
        path = change["new"]
        if path == _CHOOSE:
            self.diff.value = ""
            return
        try:
            text = self.comparison.diff(path)
        except ComputeError as exc:
            self.diff.value = f"<div style='color:#b45309'>{html.escape(str(exc))}</div>"
            return
        lines = []
        for line in text.splitlines():
            color = _LINE_COLORS.get(line[:1], "") if not line.startswith(("+++", "---")) \
                else ""
            style = f" style='color:{color}'" if color else ""
            lines.append(f"<span{style}>{html.escape(line)}</span>")
        self.diff.value = ("<pre style='font-size:12px;max-height:30em;overflow:auto;margin:0'>"
                           + "\n".join(lines) + "</pre>")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle.update(self.comparison.bundle())  # where widgets do not render: the table
        return bundle


def run_labels(comparison: Comparison) -> list[str]:
    """What the legend calls each run: ``trial 3``, or its name and the id's last part;
    the whole id where those would repeat."""
    labels = [f"trial {r.trial}" if r.trial is not None
              else f"{r.name} {r.id.rsplit('-', 1)[-1]}" for r in comparison.runs]
    if len(set(labels)) < len(labels):
        return [r.id for r in comparison.runs]
    return labels
