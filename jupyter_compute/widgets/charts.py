"""Live charts for every widget: one plotly ``FigureWidget`` per chart, laid out to fit.

::

    grid = ChartGrid()                        # toolbar (log y · smoothing · x axis) + charts
    loss = grid.add(Chart("loss", x_title="step"))
    loss.set_series("loss", xs=[0, 1, 2], ys=[0.9, 0.5, 0.3], times=[t0, t1, t2])
    grid.redraw()                             # after a batch of changes

The run, sweep and cluster widgets (and the compare view) all draw through this
module, so they read alike: integer step axes (never a tick at 1.5), a sensible
range for a single point, one colour per series with a legend, markers so a
one-point series is visible, and the toolbar's log scale, smoothing and step/time
choice applied to every chart of the grid. Plotly's own tool bar stands upright on
the right, clear of the left-aligned title.

**Fitting the cell.** A FigureWidget keeps a fixed width (700 px by default) and,
in this widget bundle, does not follow its container. So the grid measures the
width it has in the browser (a tiny anywidget, ``_Meter``, with a ResizeObserver)
and sets each chart's width from it: as many charts of at least ``MIN_WIDTH`` px
as fit side by side, the rest wrap below. Until the first measurement (or while a
cell blocks the kernel) charts use ``START_WIDTH``, which fits any usual cell.
"""

from __future__ import annotations

import math
import threading
import time

import anywidget
import ipywidgets as widgets
import traitlets

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

#: plotly's default colours ("Plotly" colorway), one per series in turn.
COLORS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
          "#b6e880", "#ff97ff", "#fecb52")
MIN_WIDTH = 380     # px: narrower than this, a chart goes to the next row
START_WIDTH = 420   # px: before the browser said how wide the cell is
GAP = 8             # px between charts
HEIGHT = 250
LEGEND_MAX = 12     # more series than this: no legend (hover names them)
SMOOTHING = {"off": 0.0, "some": 0.6, "strong": 0.9}

_METER_ESM = """
function render({ model, el }) {
  // Report the width the charts may use: that of the grid's chart box.
  const box = el.closest(".jc-chart-grid") || el.parentElement;
  let last = 0, timer = null;
  const report = () => {
    const width = Math.floor(box.getBoundingClientRect().width);
    if (width > 0 && Math.abs(width - last) > 4) {
      last = width;
      model.set("width", width);
      model.save_changes();
    }
  };
  const ro = new ResizeObserver(() => { clearTimeout(timer); timer = setTimeout(report, 80); });
  ro.observe(box);
  report();
  return () => ro.disconnect();
}
export default { render };
"""

_CSS = """
.jc-chart-grid { display: flex; flex-flow: row wrap; gap: 8px; width: 100%; max-width: 100%;
  overflow: hidden; }
.jc-chart-grid > .jc-meter { flex: 0 0 100%; height: 0; margin: 0; }
.jc-chart { flex: 0 0 auto; max-width: 100%; overflow: hidden; }
.jc-chart-tools { flex-wrap: wrap; gap: 4px 12px; align-items: center; }
.jc-chart-tools .widget-label { width: auto; min-width: 0; }
/* The widgets' header bars: text wraps, buttons keep their size and wrap below. */
.jc-run-bar { flex-wrap: wrap; align-items: center; gap: 4px 8px; }
.jc-run-bar > .jc-run-head { flex: 1 1 24em; min-width: 0; }
.jc-run-bar > .jc-run-head .widget-html-content { white-space: normal; line-height: 1.5; }
.jc-run-bar > .jupyter-button { flex: 0 0 auto; }
"""


_plotly_loaded = threading.Event()
_plotly_loading = threading.Lock()


def plotly_ready() -> bool:
    """Whether plotly is imported; the first call starts importing it on a thread of its
    own. Importing it takes seconds on a busy machine, and a widget's follower must not
    stop showing the log (and status) meanwhile: it draws charts once this says True."""
    if _plotly_loaded.is_set():
        return True
    if _plotly_loading.acquire(blocking=False):
        def load() -> None:
            import plotly.graph_objects  # noqa: F401

            _plotly_loaded.set()

        threading.Thread(target=load, name="import-plotly", daemon=True).start()
    return False


class _Meter(anywidget.AnyWidget):
    """Zero-height; its ``width`` is what the browser says the grid has (px)."""

    _esm = _METER_ESM
    _css = _CSS
    width = traitlets.Int(0).tag(sync=True)


def integer_ticks(lo: float, hi: float, ticks: int = 6) -> float:
    """A tick spacing of 1, 2, 5, 10, 20, … for an integer axis from ``lo`` to ``hi``.

    >>> integer_ticks(0, 3), integer_ticks(0, 40), integer_ticks(0, 1000)
    (1, 10, 200)
    """
    span = max(hi - lo, 1)
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    for step in (1, 2, 5, 10):
        if step * power >= raw:
            return max(1, int(step * power))
    return int(10 * power)


def padded_range(values: Sequence[float]) -> list[float] | None:
    """A range around values that are all equal (plotly would pick e.g. -0.5…1 for one
    point); None when they differ and autorange does well.

    >>> padded_range([0.25]), padded_range([3, 3]), padded_range([1, 2])
    ([0.225, 0.275], [2.7, 3.3], None)
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite or max(finite) != min(finite):
        return None
    v = finite[0]
    pad = abs(v) * 0.1 or 1.0
    return [round(v - pad, 12), round(v + pad, 12)]


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average with debiasing (as TensorBoard draws it).

    >>> smooth([1.0, 1.0, 1.0], 0.9)
    [1.0, 1.0, 1.0]
    """
    if not weight:
        return list(values)
    out, last = [], 0.0
    for n, v in enumerate(values, 1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** n))
    return out


class Series:
    """One named line of a chart: x (steps), y, and the wall-clock time of each point."""

    __slots__ = ("name", "xs", "ys", "times", "style")

    def __init__(self, name: str, style: dict[str, Any]) -> None:
        self.name, self.style = name, style
        self.xs: list[Any] = []   # numbers, or datetimes on a time axis
        self.ys: list[float] = []
        self.times: list[float] = []


class Chart:
    """One chart of named series (a plotly ``FigureWidget`` in a sized box).

    ``integer_x``: the x values are steps or counts (ticks at whole numbers).
    ``time_x``: the x values are wall-clock times (seconds since the epoch).
    ``wide``: the chart takes the grid's whole width (e.g. parallel coordinates).
    """

    def __init__(self, title: str, x_title: str = "step", y_title: str = "",
                 integer_x: bool = True, time_x: bool = False, wide: bool = False,
                 height: int = HEIGHT, integer_y: bool = False) -> None:
        import plotly.graph_objects as go

        self.title, self.x_title = title, x_title
        self.integer_x, self.time_x, self.wide = integer_x, time_x, wide
        self.integer_y = integer_y
        self.series: dict[str, Series] = {}
        self._drawn: dict[str, int] = {}   # series name → trace index
        self.fig = go.FigureWidget(layout=go.Layout(
            title={"text": title, "font": {"size": 13}, "x": 0.01, "xanchor": "left",
                   "y": 0.97, "yanchor": "top"},
            height=height, width=START_WIDTH,
            margin={"l": 50, "r": 40, "t": 34, "b": 40},
            # Upright, on the right: never over the title.
            modebar={"orientation": "v", "bgcolor": "rgba(0,0,0,0)"},
            legend={"font": {"size": 11}, "bgcolor": "rgba(255,255,255,0.6)"},
            xaxis={"title": {"text": x_title, "font": {"size": 11}},
                   **({"type": "date"} if time_x else {})},
            yaxis={"title": {"text": y_title, "font": {"size": 11}}, "automargin": True},
            hovermode="closest", showlegend=False))
        self.fig._config = {"displaylogo": False, "modeBarButtonsToRemove": ["lasso2d",
                                                                              "select2d"]}
        self.box = widgets.Box([self.fig])
        self.box.add_class("jc-chart")

    def set_series(self, name: str, xs: Sequence[Any], ys: Sequence[float],
                   times: Sequence[float] | None = None, **style: Any) -> None:
        """Replace series ``name``'s points; ``style`` goes to its plotly trace (``line``,
        ``mode``, ``color`` …) the first time only."""
        s = self.series.get(name)
        if s is None:
            s = self.series[name] = Series(name, style)
        s.xs, s.ys = list(xs), list(ys)
        s.times = list(times) if times is not None else []

    def redraw(self, log_y: bool = False, smoothing: float = 0.0, x_axis: str = "step",
               extra: dict[str, Any] | None = None, only: set[str] | None = None) -> None:
        """Send the series to the browser with the grid's options applied (``only``: just
        those series changed; hundreds of trials are not all re-sent each time)."""
        fig = self.fig
        by_time = x_axis == "time" and not self.time_x and all(
            len(s.times) == len(s.xs) for s in self.series.values())
        t0 = min((s.times[0] for s in self.series.values() if s.times), default=0.0)
        with fig.batch_update():
            for name, s in self.series.items():
                if only is not None and name not in only and name in self._drawn:
                    continue
                xs: list[Any] = [t - t0 for t in s.times] if by_time else s.xs
                index = self._drawn.get(name)
                if index is None:
                    index = self._add_trace(s)
                    self._drawn[name] = index
                trace = fig.data[index]
                trace.x = xs
                trace.y = smooth(s.ys, smoothing) if smoothing else s.ys
                raw = self._drawn.get(f"{name}\0raw")
                if smoothing and raw is None and len(s.ys) > 1:
                    raw = self._drawn[f"{name}\0raw"] = self._add_raw(s, index)
                if raw is not None:
                    fig.data[raw].x, fig.data[raw].y = xs, s.ys
                    fig.data[raw].visible = bool(smoothing)
            named = [s for s in self.series.values() if s.style.get("showlegend") is not False]
            fig.layout.showlegend = 1 < len(named) <= LEGEND_MAX
            fig.layout.yaxis.type = "log" if log_y else "linear"
            self._ranges(by_time, log_y)
            if by_time:
                fig.layout.xaxis.title.text = "seconds since the first point"
            else:
                fig.layout.xaxis.title.text = self.x_title
            for key, value in (extra or {}).items():
                fig.layout[key] = value

    def point_count(self) -> int:
        """How many points the chart holds (tests read it)."""
        return sum(len(s.ys) for s in self.series.values())

    def set_width(self, width: int) -> None:
        if self.fig.layout.width != width:
            self.fig.layout.width = width

    # -- pieces ------------------------------------------------------------------------

    def _add_trace(self, s: Series) -> int:
        style = dict(s.style)
        color = style.pop("color", COLORS[len(self._drawn) % len(COLORS)])
        style.setdefault("mode", "lines+markers")
        line = {"color": color, "width": 2, **style.pop("line", {})}
        marker = {"color": color, "size": 5, **style.pop("marker", {})}
        self.fig.add_scatter(x=[], y=[], name=s.name, line=line, marker=marker,
                             legendgroup=s.name, **style)
        return len(self.fig.data) - 1

    def _add_raw(self, s: Series, index: int) -> int:
        color = self.fig.data[index].line.color
        self.fig.add_scatter(x=[], y=[], name=f"{s.name} (raw)", mode="lines",
                             line={"color": color, "width": 1}, opacity=0.3,
                             legendgroup=s.name, showlegend=False, hoverinfo="skip")
        return len(self.fig.data) - 1

    def _ranges(self, by_time: bool, log_y: bool) -> None:
        layout = self.fig.layout
        xs = [x for s in self.series.values() for x in s.xs]
        ys = [y for s in self.series.values() for y in s.ys]
        x_range = None if by_time or self.time_x else padded_range(xs)
        if x_range is not None and self.integer_x:  # one step: show its neighbours
            x_range = [xs[0] - 1, xs[0] + 1]
        layout.xaxis.autorange = x_range is None
        if x_range is not None:
            layout.xaxis.range = x_range
        if self.integer_x and not by_time and not self.time_x and xs:
            layout.xaxis.tick0 = 0
            layout.xaxis.dtick = integer_ticks(min(xs), max(xs))
        elif not self.time_x:
            layout.xaxis.dtick = None
        y_range = None if log_y else padded_range(ys)
        layout.yaxis.autorange = y_range is None
        if y_range is not None:
            layout.yaxis.range = y_range
        if self.integer_y and ys:
            layout.yaxis.tick0 = 0
            layout.yaxis.dtick = integer_ticks(0, max(max(ys), 1), ticks=4)


class ChartGrid(widgets.VBox):
    """Charts side by side, wrapping to the cell's width, under one small toolbar.

    ``tools``: show the log-scale / smoothing / x-axis toolbar (once a chart exists).
    ``time_axis``: offer "time" as an x axis (the series carry times).
    """

    def __init__(self, tools: bool = True, time_axis: bool = True) -> None:
        self.charts: list[Chart] = []
        self.log_y = widgets.Checkbox(False, description="log y", indent=False,
                                      layout=widgets.Layout(width="auto"))
        self.smoothing = widgets.Dropdown(options=list(SMOOTHING), value="off",
                                          description="smoothing",
                                          layout=widgets.Layout(width="auto"),
                                          style={"description_width": "initial"})
        self.x_axis = widgets.ToggleButtons(options=["step", "time"], value="step",
                                            description="x axis",
                                            layout=widgets.Layout(width="auto"),
                                            style={"button_width": "56px",
                                                   "description_width": "initial"})
        controls: list[widgets.Widget] = [self.log_y, self.smoothing]
        if time_axis:
            controls.append(self.x_axis)
        self.toolbar = widgets.HBox(controls, layout=widgets.Layout(display="none"))
        self.toolbar.add_class("jc-chart-tools")
        self._show_tools = tools
        self.meter = _Meter()
        self.meter.add_class("jc-meter")
        self.box = widgets.Box([self.meter])
        self.box.add_class("jc-chart-grid")
        for control in (self.log_y, self.smoothing, self.x_axis):
            control.observe(lambda _change: self.redraw(), "value")
        self.meter.observe(lambda _change: self.fit(), "width")
        super().__init__([self.toolbar, self.box])
        self._redrawn_at = 0.0

    def add(self, chart: Chart) -> Chart:
        self.charts.append(chart)
        self.box.children = (*self.box.children, chart.box)
        if self._show_tools:
            self.toolbar.layout.display = None
        self.fit()
        return chart

    @property
    def options(self) -> dict[str, Any]:
        return {"log_y": self.log_y.value, "smoothing": SMOOTHING[self.smoothing.value],
                "x_axis": self.x_axis.value}

    def redraw(self, *charts: Chart) -> None:
        """Redraw ``charts`` (all of them if none given) with the toolbar's options."""
        for chart in charts or tuple(self.charts):
            chart.redraw(**self.options)
        self._redrawn_at = time.monotonic()

    def fit(self) -> None:
        """Size the charts to the measured width: as many per row as fit."""
        width = self.meter.width or 0
        if width <= 0:
            return
        per_row = max(1, (width + GAP) // (MIN_WIDTH + GAP))
        narrow = max(MIN_WIDTH if width >= MIN_WIDTH else width,
                     (width - GAP * (per_row - 1)) // per_row)
        for chart in self.charts:
            chart.set_width(int(width if chart.wide else min(narrow, width)))
