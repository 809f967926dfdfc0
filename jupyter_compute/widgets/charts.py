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

**Fitting the cell.** Each chart is a flex item of at least ``MIN_WIDTH`` px that
grows to share its row: one chart takes the cell's whole width, two sit side by
side when the cell has room for both, the rest wrap below. The figures have no
fixed width: plotly sizes a figure to its box (``autosize`` with the
``responsive`` config), but it only looks again on a window "resize". A box
changes size without the window knowing (a chart is added, the sidebar opens,
the cell first appears), so the grid's small script (``_Fitter``) watches the
boxes and announces a resize when a figure no longer matches its box. This is
all in the browser: it works while a cell blocks the kernel.

**Theme.** Backgrounds are transparent and the grid's stylesheet colours text,
grid lines and the tool bar from JupyterLab's theme variables, so a chart reads
in the dark theme as in the light one.
"""

from __future__ import annotations

import math
import threading
import time

import anywidget
import ipywidgets as widgets

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, TypeAlias

    from numpy.typing import NDArray

    #: A column of values: a list or a numpy array.
    Values: TypeAlias = Sequence[Any] | NDArray[Any]

#: plotly's default colours ("Plotly" colorway), one per series in turn.
COLORS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692",
          "#b6e880", "#ff97ff", "#fecb52")
MIN_WIDTH = 320     # px: narrower than this, a chart goes to the next row
HEIGHT = 250
LEGEND_MAX = 12     # more series than this: no legend (hover names them)
SMOOTHING = {"off": 0.0, "some": 0.6, "strong": 0.9}

_FITTER_ESM = """
function render({ el }) {
  // Plotly resizes a responsive figure on a window "resize" only; tell it when a
  // chart's box and its figure disagree (the window never sees a cell change size).
  let timer = null, grid = null, stopped = false;
  const boxes = new WeakSet();
  const stale = (box) => {
    const svg = box.querySelector(".main-svg");
    return svg && Math.abs(svg.getBoundingClientRect().width - box.clientWidth) > 2;
  };
  const resize = new ResizeObserver((entries) => {
    if (!entries.some((e) => stale(e.target))) return;
    clearTimeout(timer);
    timer = setTimeout(() => window.dispatchEvent(new Event("resize")), 50);
  });
  const watch = () => {
    for (const box of grid.querySelectorAll(":scope > .jc-chart")) {
      if (!boxes.has(box)) { boxes.add(box); resize.observe(box); }
    }
  };
  const added = new MutationObserver(watch);
  const find = () => {  // the view is rendered before it is attached to the page
    if (stopped) return;
    grid = el.closest(".jc-chart-grid");
    if (!grid) { requestAnimationFrame(find); return; }
    added.observe(grid, { childList: true });
    watch();
  };
  find();
  return () => { stopped = true; resize.disconnect(); added.disconnect(); };
}
export default { render };
"""

_CSS = """
.jc-chart-grid { display: flex; flex-flow: row wrap; gap: 8px; width: 100%; max-width: 100%;
  overflow: hidden; }
.jc-chart-grid > .jc-fitter { flex: 0 0 100%; height: 0; margin: 0; }
/* At least MIN_WIDTH, growing to share the row: one chart fills it, two sit side by side. */
.jc-chart { flex: 1 1 MIN_WIDTHpx; min-width: 0; max-width: 100%; overflow: hidden;
  margin: 0; }
.jc-chart.jc-chart-wide { flex-basis: 100%; }
.jc-chart > * { flex: 1 1 0; min-width: 0; max-width: 100%; margin: 0; }
/* The theme's colours (plotly writes its own inline, hence !important); hover labels
   keep plotly's, drawn on the trace's colour. */
.jc-chart .main-svg > :not(.hoverlayer) text { fill: var(--jp-ui-font-color1) !important; }
.jc-chart .main-svg .annotation text { fill: var(--jp-ui-font-color2) !important; }
.jc-chart .gridlayer path, .jc-chart .zerolinelayer path {
  stroke: var(--jp-border-color2) !important; }
.jc-chart .parcoords .axis path.domain, .jc-chart .parcoords .axis .tick line {
  stroke: var(--jp-ui-font-color2) !important; }
.jc-chart .parcoords text { text-shadow: none !important; }
.jc-chart .modebar-btn path { fill: var(--jp-ui-font-color3) !important; }
.jc-chart .modebar-btn:hover path, .jc-chart .modebar-btn.active path {
  fill: var(--jp-ui-font-color1) !important; }
.jc-chart-tools { flex-wrap: wrap; gap: 4px 12px; align-items: center; }
.jc-chart-tools .widget-label { width: auto; min-width: 0; }
.jc-chart-tools > .widget-label { margin-right: -8px; }
/* The widgets' header bars: text wraps, buttons keep their size and wrap below. */
.jc-run-bar { flex-wrap: wrap; align-items: center; gap: 4px 8px; }
.jc-run-bar > .jc-run-head { flex: 1 1 24em; min-width: 0; }
.jc-run-bar > .jc-run-head .widget-html-content { white-space: normal; line-height: 1.5; }
.jc-run-bar > .jupyter-button { flex: 0 0 auto; }
""".replace("MIN_WIDTH", str(MIN_WIDTH))


_plotly_loaded = threading.Event()
_plotly_tried = threading.Event()  # the import ended, imported or not
_plotly_loading = threading.Lock()
PLOTLY_WAIT = 60.0  # how long a widget's last batch waits for the import


def plotly_ready(wait: float = 0.0) -> bool:
    """Whether plotly is imported; the first call starts importing it on a thread of its
    own. Importing it takes seconds on a busy machine, and a widget's follower must not
    stop showing the log (and status) meanwhile: it draws charts once this says True.
    ``wait``: seconds to wait for the import, for a follower's last batch, which has no
    later one to draw its charts in."""
    if _plotly_loaded.is_set():
        return True
    if _plotly_loading.acquire(blocking=False):
        def load() -> None:
            try:
                import plotly.graph_objects  # noqa: F401

                _plotly_loaded.set()
            finally:
                _plotly_tried.set()

        threading.Thread(target=load, name="import-plotly", daemon=True).start()
    if wait:
        _plotly_tried.wait(wait)
    return _plotly_loaded.is_set()


class _Fitter(anywidget.AnyWidget):
    """Zero-height: carries the charts' stylesheet and the script that keeps each
    figure as wide as its box."""

    _esm = _FITTER_ESM
    _css = _CSS


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


def smooth(values: Sequence[float | None], weight: float) -> list[float | None]:
    """Exponential moving average with debiasing (as TensorBoard draws it); a gap (None
    or NaN, between two trials' curves) starts the average again.

    >>> smooth([1.0, 1.0, None, 3.0], 0.9)
    [1.0, 1.0, None, 3.0]
    """
    if not weight:
        return list(values)
    out: list[float | None] = []
    last, n = 0.0, 0
    for v in values:
        if v is None or v != v:
            out.append(v)
            last, n = 0.0, 0
            continue
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight ** n))
    return out


class Series:
    """One line of a chart: x (steps), y, and the wall-clock time of each point.

    ``name`` keys it; ``label`` is what the legend and hover say. NaN in ``ys`` breaks
    the line, so one series can draw many trials (``customdata`` says which)."""

    __slots__ = ("name", "label", "xs", "ys", "times", "customdata", "style")

    def __init__(self, name: str, style: dict[str, Any]) -> None:
        self.name, self.label, self.style = name, name, style
        self.xs: Values = []   # numbers, or datetimes on a time axis
        self.ys: Values = []
        self.times: Values = []
        self.customdata: Values | None = None


class Chart:
    """One chart of named series (a plotly ``FigureWidget`` in a box that fits the cell).

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
        clear = "rgba(0,0,0,0)"  # the cell's own background shows, light or dark
        # Grey that reads on either background where the stylesheet is absent (a static
        # export); plotly's default grid is white. (Not a template: "plotly_white" cost
        # 10-25 ms per figure.)
        axis_colors = {"gridcolor": "rgba(128,128,128,0.25)",
                       "zerolinecolor": "rgba(128,128,128,0.5)"}
        self.fig = go.FigureWidget(layout=go.Layout(
            paper_bgcolor=clear, plot_bgcolor=clear,
            title={"text": title, "font": {"size": 13}, "x": 0.01, "xanchor": "left",
                   "y": 0.97, "yanchor": "top"},
            height=height, autosize=True,  # as wide as its box (see the module's notes)
            margin={"l": 50, "r": 40, "t": 34, "b": 40},
            # Upright, on the right: never over the title.
            modebar={"orientation": "v", "bgcolor": clear},
            legend={"font": {"size": 11}, "bgcolor": clear},
            xaxis={"title": {"text": x_title, "font": {"size": 11}}, **axis_colors,
                   # the clock only: a date line under the first tick said little
                   **({"type": "date", "tickformat": "%H:%M:%S"} if time_x else {})},
            yaxis={"title": {"text": y_title, "font": {"size": 11}}, "automargin": True,
                   **axis_colors},
            hovermode="closest", showlegend=False))
        self.fig._config = {"displaylogo": False, "responsive": True,
                            "modeBarButtonsToRemove": ["lasso2d", "select2d"]}
        self.box = widgets.Box([self.fig])
        self.box.add_class("jc-chart")
        if wide:
            self.box.add_class("jc-chart-wide")

    def set_series(self, name: str, xs: Values, ys: Values, times: Values | None = None,
                   label: str | None = None, customdata: Values | None = None,
                   **style: Any) -> None:
        """Replace series ``name``'s points; ``style`` goes to its plotly trace (``line``,
        ``mode``, ``color`` …) the first time only. Lists or numpy arrays; None or NaN in
        ``ys`` is a gap in the line."""
        s = self.series.get(name)
        if s is None:
            s = self.series[name] = Series(name, style)
        # Copies: the caller goes on appending to its lists on its own thread.
        s.xs, s.ys = _copy(xs), _copy(ys)
        s.times = _copy(times) if times is not None else []
        s.label = label or name
        s.customdata = customdata

    def redraw(self, log_y: bool = False, smoothing: float = 0.0, x_axis: str = "step",
               extra: dict[str, Any] | None = None, only: set[str] | None = None) -> None:
        """Send the series to the browser with the grid's options applied (``only``: just
        those series changed; hundreds of trials are not all re-sent each time)."""
        import numpy as np

        fig = self.fig
        by_time = x_axis == "time" and not self.time_x and all(
            len(s.times) == len(s.xs) for s in self.series.values())
        t0 = min((s.times[0] for s in self.series.values() if len(s.times)), default=0.0)
        new = [s for s in self.series.values() if s.name not in self._drawn]
        with fig.batch_update():
            self._add_traces(new)
            for name, s in self.series.items():
                if only is not None and name not in only and s not in new:
                    continue
                # Arrays, not lists: plotly checks a list element by element (~40 ms for
                # 20,000 points), an array at once.
                xs: Any = np.asarray(s.times, dtype=float) - t0 if by_time else (
                    s.xs if self.time_x else _numbers(s.xs))
                ys = _numbers(s.ys)
                trace = fig.data[self._drawn[name]]
                trace.x = xs
                trace.y = np.asarray(smooth(ys.tolist(), smoothing), dtype=float) \
                    if smoothing and hasattr(ys, "dtype") else ys
                if trace.name != s.label:
                    trace.name = s.label
                if s.customdata is not None:
                    trace.customdata = np.asarray(s.customdata)
                raw = self._drawn.get(f"{name}\0raw")
                if smoothing and raw is None and len(s.ys) > 1:
                    raw = self._drawn[f"{name}\0raw"] = self._add_raw(s, self._drawn[name])
                if raw is not None:
                    fig.data[raw].x, fig.data[raw].y = xs, ys
                    fig.data[raw].visible = bool(smoothing)
            named = [s for s in self.series.values() if s.style.get("showlegend") is not False]
            # Each layout key is set once: in a batch, plotly drops a second assignment
            # that restores the value it had before the batch, so the first one stuck
            # (the cluster chart's range fell back to -1..1 on its second poll).
            layout = {"showlegend": 1 < len(named) <= LEGEND_MAX,
                      "yaxis.type": "log" if log_y else "linear",
                      "xaxis.title.text": "seconds since the first point" if by_time
                      else self.x_title,
                      **self._ranges(by_time, log_y), **(extra or {})}
            for key, value in layout.items():
                fig.layout[key] = value

    def point_count(self) -> int:
        """How many points the chart holds, gaps aside (tests read it)."""
        return sum(sum(1 for y in s.ys if y is not None and y == y)
                   for s in self.series.values())

    # -- pieces ------------------------------------------------------------------------

    def _add_traces(self, new: list[Series]) -> None:
        """One trace per new series, added in one call (each call re-validates)."""
        import plotly.graph_objects as go

        traces = []
        for n, s in enumerate(new, len(self._drawn)):
            style = dict(s.style)
            color = style.pop("color", COLORS[n % len(COLORS)])
            style.setdefault("mode", "lines+markers")
            line = {"color": color, "width": 2, **style.pop("line", {})}
            marker = {"color": color, "size": 5, **style.pop("marker", {})}
            traces.append(go.Scatter(name=s.label, line=line, marker=marker,
                                     legendgroup=s.name, **style))
            self._drawn[s.name] = n
        if traces:
            self.fig.add_traces(traces)

    def _add_raw(self, s: Series, index: int) -> int:
        color = self.fig.data[index].line.color
        self.fig.add_scatter(x=[], y=[], name=f"{s.label} (raw)", mode="lines",
                             line={"color": color, "width": 1}, opacity=0.3,
                             legendgroup=s.name, showlegend=False, hoverinfo="skip")
        return len(self.fig.data) - 1

    def _ranges(self, by_time: bool, log_y: bool) -> dict[str, Any]:
        """The axes' ranges and ticks for the current points (layout paths → values)."""
        import numpy as np

        layout: dict[str, Any] = {}
        ys = _finite([s.ys for s in self.series.values()])
        xs, x_range = np.zeros(0), None
        if not self.time_x:
            xs = _finite([s.xs for s in self.series.values()])
            if not by_time and len(xs) and xs.min() == xs.max():
                x_range = ([xs[0] - 1, xs[0] + 1] if self.integer_x  # a step's neighbours
                           else padded_range([float(xs[0])]))
        layout["xaxis.autorange"] = x_range is None
        if x_range is not None:
            layout["xaxis.range"] = [float(v) for v in x_range]
        if self.integer_x and not by_time and not self.time_x and len(xs):
            layout["xaxis.tick0"] = 0
            layout["xaxis.dtick"] = integer_ticks(float(xs.min()), float(xs.max()))
        elif not self.time_x:
            layout["xaxis.dtick"] = None
        y_range = None if log_y or not len(ys) or ys.min() != ys.max() else \
            padded_range([float(ys[0])])
        layout["yaxis.autorange"] = y_range is None
        if y_range is not None:
            layout["yaxis.range"] = y_range
        if self.integer_y and len(ys):
            layout["yaxis.tick0"] = 0
            layout["yaxis.dtick"] = integer_ticks(0, max(float(np.max(ys)), 1), ticks=4)
        return layout


def _copy(values: Values) -> Values:
    return values.copy() if hasattr(values, "copy") and hasattr(values, "dtype") \
        else list(values)


def _numbers(values: Values) -> Any:
    """``values`` as a float array (None → NaN, a gap), or as they are if not numbers."""
    import numpy as np

    try:
        return np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return values


def _finite(columns: list[Values]) -> Any:
    """The finite numbers of several columns, as one numpy array."""
    import numpy as np

    parts = [a for a in (_numbers(c) for c in columns if len(c)) if hasattr(a, "dtype")]
    if not parts:
        return np.zeros(0)
    values = np.concatenate(parts)
    return values[np.isfinite(values)]


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
        # Its own label: ToggleButtons' description sat above its buttons here.
        self.x_axis = widgets.ToggleButtons(options=["step", "time"], value="step",
                                            layout=widgets.Layout(width="auto"),
                                            style={"button_width": "56px"})
        controls: list[widgets.Widget] = [self.log_y, self.smoothing]
        if time_axis:
            controls += [widgets.Label("x axis"), self.x_axis]
        self.toolbar = widgets.HBox(controls, layout=widgets.Layout(display="none"))
        self.toolbar.add_class("jc-chart-tools")
        self._show_tools = tools
        self.fitter = _Fitter()
        self.fitter.add_class("jc-fitter")
        self.box = widgets.Box([self.fitter])
        self.box.add_class("jc-chart-grid")
        for control in (self.log_y, self.smoothing, self.x_axis):
            control.observe(lambda _change: self.redraw(), "value")
        super().__init__([self.toolbar, self.box])
        self.redrawn_at = 0.0  # time.monotonic() of the last redraw()

    def add(self, chart: Chart) -> Chart:
        self.charts.append(chart)
        self.box.children = (*self.box.children, chart.box)
        if self._show_tools:
            self.toolbar.layout.display = None
        return chart

    @property
    def options(self) -> dict[str, Any]:
        return {"log_y": self.log_y.value, "smoothing": SMOOTHING[self.smoothing.value],
                "x_axis": self.x_axis.value}

    def redraw(self, *charts: Chart) -> None:
        """Redraw ``charts`` (all of them if none given) with the toolbar's options."""
        for chart in charts or tuple(self.charts):
            chart.redraw(**self.options)
        self.redrawn_at = time.monotonic()
