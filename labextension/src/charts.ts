/**
 * Metric charts with plotly.js (the project's one chart library), loaded on first
 * use so the sidebar itself stays light. Colours come from JupyterLab's theme
 * variables; `redraw` after a theme change repaints them.
 *
 * Step axes are whole numbers (no 1.5); a single point gets a range around it; the
 * title is an HTML heading above the plot, so plotly's toolbar never covers it.
 */
import { el } from './format';

/** One line of a chart: its name (the legend) and its points. */
export interface ISeries {
  name: string;
  x: number[];
  y: number[];
}

type Plotly = {
  react(node: HTMLElement, data: unknown[], layout: unknown, config: unknown): Promise<void>;
  purge(node: HTMLElement): void;
  Plots: { resize(node: HTMLElement): void };
};

let plotly: Promise<Plotly> | null = null;

function loadPlotly(): Promise<Plotly> {
  if (!plotly) {
    plotly = import('plotly.js-basic-dist-min').then(
      (mod: any) => (mod.default ?? mod) as Plotly
    );
  }
  return plotly;
}

function cssVar(name: string, fallback: string): string {
  const value = getComputedStyle(document.body).getPropertyValue(name).trim();
  return value || fallback;
}

/** A whole-number tick spacing of 1, 2 or 5 × 10^k giving at most ~8 ticks. */
export function integerDtick(min: number, max: number): number {
  const raw = Math.max(1, (max - min) / 8);
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 5, 10]) {
    if (m * power >= raw) {
      return Math.max(1, m * power);
    }
  }
  return Math.max(1, 10 * power);
}

/** `[min, max]` of many values (a spread into Math.min overflows the stack). */
function extent(values: number[]): [number, number] | null {
  if (!values.length) {
    return null;
  }
  let low = values[0];
  let high = values[0];
  for (const v of values) {
    low = v < low ? v : low;
    high = v > high ? v : high;
  }
  return [low, high];
}

/** A chart: a heading and a plot; `update` redraws it with new series. */
export class MetricChart {
  readonly node: HTMLElement;

  constructor(
    readonly title: string,
    readonly xTitle = 'step'
  ) {
    this.node = el(
      'div',
      { className: 'jp-Compute-chart' },
      el('div', { className: 'jp-Compute-chartTitle' }, title),
      this.plot
    );
    this.node.dataset.metric = title;
  }

  async update(series: ISeries[]): Promise<void> {
    this.series = series;
    await this.redraw();
  }

  async redraw(): Promise<void> {
    const Plotly = await loadPlotly();
    const text = cssVar('--jp-ui-font-color1', '#222');
    const grid = cssVar('--jp-border-color2', '#ddd');
    const font = cssVar('--jp-ui-font-family', 'sans-serif');
    const xs = extent(this.series.flatMap(s => s.x));
    const ys = extent(this.series.flatMap(s => s.y));
    const xaxis: Record<string, unknown> = {
      title: { text: this.xTitle, standoff: 4 },
      gridcolor: grid,
      zerolinecolor: grid,
      tickformat: 'd',
      tick0: 0,
      dtick: xs ? integerDtick(xs[0], xs[1]) : 1
    };
    const yaxis: Record<string, unknown> = {
      gridcolor: grid,
      zerolinecolor: grid,
      automargin: true
    };
    if (ys && ys[0] === ys[1]) {
      // One value (or one point): a band around it, not plotly's -0.5 to 1.
      const v = ys[0];
      const pad = Math.abs(v) * 0.1 || 1;
      yaxis.range = [v - pad, v + pad];
    }
    if (xs && xs[0] === xs[1]) {
      xaxis.range = [xs[0] - 1, xs[0] + 1];
    }
    const data = this.series.map(s => ({
      type: 'scatter',
      mode: s.x.length > 30 ? 'lines' : 'lines+markers',
      name: s.name,
      x: s.x,
      y: s.y
    }));
    const layout = {
      autosize: true,
      height: 240,
      margin: { l: 50, r: 12, t: 8, b: 56 },
      paper_bgcolor: 'rgba(0,0,0,0)',
      plot_bgcolor: 'rgba(0,0,0,0)',
      font: { color: text, family: font, size: 11 },
      showlegend: true,
      legend: { orientation: 'h', x: 0, y: -0.22, yanchor: 'top' },
      xaxis,
      yaxis
    };
    await Plotly.react(this.plot, data, layout, {
      displayModeBar: false,
      responsive: true
    });
  }

  dispose(): void {
    if (plotly) {
      void plotly.then(P => P.purge(this.plot));
    }
  }

  private series: ISeries[] = [];
  private readonly plot = el('div', { className: 'jp-Compute-plot' });
}
