/**
 * A run's page in the main area: an Overview tab (status and times; script,
 * arguments, parameters and tags; git; metric charts; outputs with preview and
 * download; the snapshot's files; a sweep's trials; a pipeline's steps, as a graph
 * and a table) and the Log tab.
 *
 * It asks the server for the run's detail every 2 s until the run has ended, then
 * once more and stops. What did not change is not redrawn, so an open preview or a
 * chart being hovered stays as it is.
 */
import { Message } from '@lumino/messaging';
import { TabPanel, Widget } from '@lumino/widgets';

import {
  api,
  ApiError,
  IFile,
  IMetricRecord,
  IRunDetail,
  isNetworkError,
  IStep,
  ITrial,
  TERMINAL
} from './api';
import { describe } from './attach';
import { ISeries, MetricChart } from './charts';
import { duration, el, metricValue, statusClass, stepState } from './format';
import { LogView } from './logview';

const INTERVAL = 2000;
const MAX_BACKOFF = 10000;
/** While a run goes on, its outputs are listed every this many polls (listing a
 * remote run's outputs fetches the new ones). */
const OUTPUTS_EVERY = 5;
/** Text outputs larger than this are offered for download only. */
const MAX_TEXT_PREVIEW = 1024 * 1024;
const TEXT = new Set([
  'txt', 'log', 'json', 'jsonl', 'csv', 'tsv', 'md', 'yaml', 'yml', 'py', 'toml',
  'cfg', 'ini', 'xml', 'html', 'htm', 'sh', 'r', 'sql', 'out', 'err'
]);
const IMAGE = new Set(['png', 'jpg', 'jpeg', 'gif', 'svg', 'webp', 'bmp']);

export interface IRunPageActions {
  /** Open another run's page (a sweep's trial, a pipeline's step). */
  openRun(runId: string, name: string): void;
  /** The run's status changed (the sidebar refreshes). */
  changed(): void;
}

/** `1.2 MB`, `512 B`. */
export function size(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let i = 0;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return i === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[i]}`;
}

function when(iso: string | null): string {
  return iso ? new Date(iso).toLocaleString() : '–';
}

function shown(value: unknown): string {
  if (typeof value === 'number') {
    return metricValue(value);
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

function extension(path: string): string {
  const dot = path.lastIndexOf('.');
  return dot > path.lastIndexOf('/') ? path.slice(dot + 1).toLowerCase() : '';
}

/** A two-column table of `[key, value]` rows. */
function table(rows: [string, string | Node][], className = ''): HTMLElement {
  return el(
    'table',
    { className: `jp-Compute-kv ${className}` },
    el(
      'tbody',
      {},
      ...rows.map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v)))
    )
  );
}

function section(name: string, title: string, ...children: (Node | string)[]): HTMLElement {
  const node = el(
    'section',
    { className: 'jp-Compute-card' },
    el('h3', {}, title),
    ...children
  );
  node.dataset.section = name;
  return node;
}

function none(text = 'none'): HTMLElement {
  return el('span', { className: 'jp-Compute-none' }, text);
}

/** The Overview tab. */
export class RunOverview extends Widget {
  constructor(
    readonly runId: string,
    private readonly actions: IRunPageActions
  ) {
    super();
    this.addClass('jp-Compute-runPage');
    this.title.label = 'Overview';
    this.node.append(this.header, this.note, this.steps, this.facts, this.charts,
      this.outputs, this.trials, this.files);
    this.note.textContent = 'Loading…';
    this.themeWatch.observe(document.body, {
      attributes: true,
      attributeFilter: ['data-jp-theme-light']
    });
    void this.refresh();
  }

  dispose(): void {
    window.clearTimeout(this.timer);
    this.themeWatch.disconnect();
    for (const chart of this.chartsByName.values()) {
      chart.dispose();
    }
    this.dropPreview();
    super.dispose();
  }

  protected onResize(msg: Widget.ResizeMessage): void {
    super.onResize(msg);
    for (const chart of this.chartsByName.values()) {
      void chart.redraw();
    }
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    for (const chart of this.chartsByName.values()) {
      void chart.redraw();
    }
  }

  /** Ask again now (after Cancel). */
  refreshNow(): void {
    window.clearTimeout(this.timer);
    void this.refresh();
  }

  private async refresh(): Promise<void> {
    if (this.isDisposed) {
      return;
    }
    let wait = INTERVAL;
    let ended = false;
    try {
      const withOutputs = this.polls++ % OUTPUTS_EVERY === 0 || this.endedSeen;
      let detail = await api.detail(this.runId, withOutputs);
      ended = TERMINAL.includes(detail.status);
      if (ended && !withOutputs) {
        detail = await api.detail(this.runId); // the final list of outputs
      }
      this.endedSeen = ended;
      if (detail.outputs === null && this.detail) {
        detail.outputs = this.detail.outputs; // not asked for this time
      }
      if (this.detail && this.detail.status !== detail.status) {
        this.actions.changed();
      }
      this.render(detail);
      await this.renderMetrics(detail);
      this.note.textContent = detail.unreachable
        ? `The target does not answer (${detail.unreachable}); showing what is known.`
        : '';
      this.note.hidden = !this.note.textContent;
      this.backoff = INTERVAL;
    } catch (reason) {
      if (reason instanceof ApiError && reason.status === 404) {
        this.note.textContent = reason.message;
        this.note.hidden = false;
        return;
      }
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF);
      wait = this.backoff;
      this.note.textContent = isNetworkError(reason)
        ? 'The server does not answer; retrying…'
        : `${describe(reason)}; retrying…`;
      this.note.hidden = false;
    }
    if (!ended && !this.isDisposed) {
      this.timer = window.setTimeout(() => void this.refresh(), wait);
    }
  }

  // -- the page's parts --------------------------------------------------------

  private render(d: IRunDetail): void {
    const previous = this.detail;
    this.detail = d;
    const same = (keys: (keyof IRunDetail)[]) =>
      previous !== null && keys.every(k => JSON.stringify(previous[k]) === JSON.stringify(d[k]));
    if (!same(['name', 'status', 'kind', 'target', 'error', 'id', 'parent'])) {
      this.renderHeader(d);
    }
    if (!same(['status', 'started', 'ended', 'exit_code', 'error', 'arguments', 'params',
      'tags', 'git', 'snapshot', 'script', 'best_run', 'warnings', 'ended_by'])) {
      this.renderFacts(d);
    }
    if (!same(['outputs'])) {
      this.renderOutputs(d);
    }
    if (!same(['children'])) {
      this.renderTrials(d);
    }
    if (!same(['steps'])) {
      this.renderSteps(d);
    }
    if (!previous) {
      this.renderFiles(d); // a snapshot never changes
    }
  }

  private renderHeader(d: IRunDetail): void {
    const ended = TERMINAL.includes(d.status);
    const badge = el('span', { className: statusClass(d.status) }, d.status);
    badge.dataset.role = 'status';
    if (d.error) {
      badge.title = d.error;
    }
    const buttons = el('div', { className: 'jp-Compute-actions' });
    if (!ended) {
      const cancel = el(
        'button',
        { className: 'jp-Compute-button jp-mod-warn', type: 'button' },
        'Cancel'
      );
      cancel.onclick = async () => {
        cancel.disabled = true;
        cancel.textContent = 'Canceling…';
        try {
          await api.cancel(this.runId);
        } catch (reason) {
          this.note.textContent = describe(reason);
          this.note.hidden = false;
          cancel.disabled = false;
          cancel.textContent = 'Cancel';
        }
        this.actions.changed();
        this.refreshNow();
      };
      buttons.append(cancel);
    }
    const where = el('span', { className: 'jp-Compute-kind' }, `${d.kind} on ${d.target}`);
    if (d.parent) {
      const parent = d.parent;
      const link = el('button', { className: 'jp-Compute-textLink', type: 'button' }, parent.name);
      link.title = `Open ${parent.kind} ${parent.id}`;
      link.onclick = () => this.actions.openRun(parent.id, parent.name);
      where.append(`, part of ${parent.kind} `, link);
    }
    this.header.replaceChildren(
      el(
        'div',
        { className: 'jp-Compute-pageTitle' },
        el('h2', { title: d.name }, d.name),
        badge,
        where
      ),
      el('div', { className: 'jp-Compute-pageId' }, d.id),
      buttons
    );
  }

  private renderFacts(d: IRunDetail): void {
    const times = table([
      ['status', d.status],
      ['created', when(d.created)],
      ['started', when(d.started)],
      ['ended', when(d.ended)],
      ['duration', duration(d.started, d.ended)],
      ['exit code', d.exit_code === null ? '–' : String(d.exit_code)],
      ...(d.error ? [['error', d.error] as [string, string]] : [])
    ]);
    const command = el(
      'code',
      { className: 'jp-Compute-command' },
      [d.script, ...(d.arguments ?? [])].join(' ')
    );
    const params = Object.entries(d.params ?? {});
    const tags = Object.entries(d.tags ?? {});
    const git = d.git ?? { repository: null, branch: null, commit: null, dirty: null };
    const commit = git.commit
      ? el('code', { title: git.commit }, git.commit.slice(0, 10))
      : none('not a git repository');
    const dirty =
      git.dirty === null
        ? '–'
        : git.dirty
          ? el('span', { className: 'jp-Compute-dirty' }, 'dirty (uncommitted changes)')
          : 'clean';
    const snap = d.snapshot;
    const sweep: HTMLElement[] = [];
    if (d.kind === 'sweep') {
      const best = d.best_run;
      const bestLink = best
        ? el('button', { className: 'jp-Compute-textLink', type: 'button' },
            `trial ${best.trial}` +
              (best.primary_metric === null ? '' : ` (${metricValue(best.primary_metric)})`))
        : none('no result yet');
      if (best) {
        bestLink.onclick = () => this.actions.openRun(best.id, `${d.name} trial ${best.trial}`);
      }
      const limit = (n: number | null | undefined) => (n === null || n === undefined ? '–' : String(n));
      sweep.push(
        section(
          'sweep',
          'Sweep',
          table([
            ['goal', `${d.primary_metric?.goal ?? ''} ${d.primary_metric?.name ?? '–'}`.trim()],
            ['best', bestLink],
            ['sampling', d.sampling ?? '–'],
            ['policy', d.policy ?? '–'],
            ['runs', `${limit(d.max_total_runs)} at most, ${limit(d.max_concurrent_runs)} at once`],
            ...(d.ended_by ? [['ended by', d.ended_by] as [string, string]] : []),
            ...(d.warnings ?? []).map(w => ['warning', w] as [string, string])
          ])
        )
      );
    }
    this.facts.replaceChildren(
      section('run', 'Run', times),
      ...sweep,
      section(
        'arguments',
        d.kind === 'sweep' ? 'Script, arguments and search space' : 'Script and arguments',
        command,
        el('h4', {}, 'Parameters'),
        params.length
          ? table(params.map(([k, v]) => [k, shown(v)]), 'jp-Compute-params')
          : none(d.kind === 'notebook' ? 'no parameters injected' : 'none'),
        el('h4', {}, 'Tags'),
        tags.length
          ? el(
              'div',
              { className: 'jp-Compute-tags' },
              ...tags.map(([k, v]) =>
                el('span', { className: 'jp-Compute-tag', title: `${k}=${shown(v)}` },
                  shown(v) === '' ? k : `${k}=${shown(v)}`)
              )
            )
          : none()
      ),
      section(
        'git',
        'Git',
        table([
          ['commit', commit],
          ['branch', git.branch ?? '–'],
          ['dirty', dirty],
          ['repository', git.repository ?? '–']
        ])
      ),
      section(
        'snapshot',
        'Snapshot',
        snap
          ? table([
              ['id', el('code', { title: snap.id }, snap.id.slice(0, 12))],
              ['files', `${snap.files} (${size(snap.bytes)})`],
              ['new', `${snap.new_files} (${size(snap.new_bytes)})`],
              ['source', d.source_dir]
            ])
          : none()
      )
    );
  }

  private async renderMetrics(d: IRunDetail): Promise<void> {
    const series = new Map<string, ISeries[]>();
    if (d.kind === 'sweep') {
      const name = d.primary_metric?.name;
      if (name) {
        series.set(name, await this.trialSeries(d.children ?? [], name));
      }
    } else {
      const { metrics } = await api.metrics(this.runId);
      for (const [name, records] of Object.entries(metrics)) {
        const line = scalarSeries(name, records);
        if (line) {
          series.set(name, [line]);
        }
      }
    }
    const key = JSON.stringify([...series]);
    if (key === this.metricsKey) {
      return;
    }
    this.metricsKey = key;
    if (!series.size) {
      this.charts.replaceChildren(
        el('h3', {}, 'Metrics'),
        none(TERMINAL.includes(d.status) ? 'No metrics were logged.' : 'No metrics yet.')
      );
      return;
    }
    const grid = el('div', { className: 'jp-Compute-chartGrid' });
    for (const name of series.keys()) {
      let chart = this.chartsByName.get(name);
      if (!chart) {
        chart = new MetricChart(d.kind === 'sweep' ? `${name} per trial` : name);
        this.chartsByName.set(name, chart);
      }
      grid.append(chart.node);
    }
    this.charts.replaceChildren(el('h3', {}, 'Metrics'), grid);
    await Promise.all(
      [...series].map(([name, lines]) => this.chartsByName.get(name)!.update(lines))
    );
  }

  /** The primary metric of each trial: one line per trial, in the legend by number. */
  private async trialSeries(trials: ITrial[], metric: string): Promise<ISeries[]> {
    const found: ISeries[] = [];
    for (const t of [...trials].sort((a, b) => a.trial - b.trial)) {
      if (!t.id) {
        continue;
      }
      let line = this.endedTrials.get(t.id);
      if (!line) {
        try {
          const { metrics } = await api.metrics(t.id);
          line = scalarSeries(`trial ${t.trial}`, metrics[metric] ?? []) ?? undefined;
        } catch {
          line = undefined;
        }
        if (line && TERMINAL.includes(t.status)) {
          this.endedTrials.set(t.id, line);
        }
      }
      if (line) {
        found.push(line);
      }
    }
    return found;
  }

  private renderOutputs(d: IRunDetail): void {
    const files = d.outputs ?? [];
    if (!files.length) {
      this.outputList.replaceChildren(
        none(TERMINAL.includes(d.status) ? 'The run wrote no outputs.' : 'No outputs yet.')
      );
    } else {
      this.outputList.replaceChildren(
        el(
          'table',
          { className: 'jp-Compute-files jp-Compute-outputs' },
          el('tbody', {}, ...files.map(f => this.outputRow(f)))
        )
      );
    }
    if (!this.outputs.childElementCount) {
      this.outputs.append(el('h3', {}, 'Outputs'), this.outputList, this.preview);
      this.outputs.dataset.section = 'outputs';
    }
  }

  private outputRow(f: IFile): HTMLElement {
    const name = f.path.split('/').pop() ?? f.path;
    const preview = el('button', { className: 'jp-Compute-button', type: 'button' },
      'Preview');
    preview.onclick = () => void this.showPreview(f);
    const download = el(
      'a',
      {
        className: 'jp-Compute-button',
        href: api.outputUrl(this.runId, f.path),
        download: name,
        title: `Download ${f.path}`
      },
      'Download'
    );
    const row = el(
      'tr',
      {},
      el('td', { className: 'jp-Compute-path', title: f.path }, f.path),
      el('td', { className: 'jp-Compute-size' }, size(f.size)),
      el('td', { className: 'jp-Compute-actions' }, preview, download)
    );
    row.dataset.output = f.path;
    return row;
  }

  private async showPreview(f: IFile): Promise<void> {
    this.dropPreview();
    const body = el('div', { className: 'jp-Compute-previewBody' }, 'Loading…');
    const close = el('button', { className: 'jp-Compute-button', type: 'button' }, 'Close');
    close.onclick = () => {
      this.dropPreview();
      this.preview.replaceChildren();
    };
    this.preview.replaceChildren(
      el('div', { className: 'jp-Compute-previewHeader' }, el('code', {}, f.path), close),
      body
    );
    this.preview.dataset.path = f.path;
    const ext = extension(f.path);
    try {
      if (IMAGE.has(ext)) {
        this.objectUrl = URL.createObjectURL(await api.outputBlob(this.runId, f.path));
        body.replaceChildren(el('img', { src: this.objectUrl, alt: f.path }));
      } else if (ext === 'ipynb') {
        const dark = document.body.dataset.jpThemeLight === 'false';
        const view = await api.outputNotebook(this.runId, f.path, dark ? 'dark' : 'light');
        const frame = el('iframe', { className: 'jp-Compute-frame', title: f.path });
        frame.setAttribute('sandbox', ''); // read-only: no script of the notebook runs
        frame.srcdoc = view.html;
        body.replaceChildren(frame);
      } else if (TEXT.has(ext) || ext === '') {
        if (f.size > MAX_TEXT_PREVIEW) {
          body.replaceChildren(none(`${size(f.size)}: too large to preview; download it.`));
        } else {
          const text = await (await api.outputBlob(this.runId, f.path)).text();
          body.replaceChildren(el('pre', { className: 'jp-Compute-logText' }, text));
        }
      } else {
        body.replaceChildren(none(`No preview for .${ext} files; download it.`));
      }
    } catch (reason) {
      body.replaceChildren(el('span', { className: 'jp-Compute-rowError' }, describe(reason)));
    }
  }

  private dropPreview(): void {
    if (this.objectUrl) {
      URL.revokeObjectURL(this.objectUrl);
      this.objectUrl = '';
    }
  }

  private renderTrials(d: IRunDetail): void {
    const trials = d.children ?? [];
    if (d.kind !== 'sweep') {
      this.trials.hidden = true;
      return;
    }
    this.trials.hidden = false;
    const names = [...new Set(trials.flatMap(t => Object.keys(t.parameters ?? {})))];
    const head = el(
      'tr',
      {},
      ...['trial', 'status', ...names, d.primary_metric?.name ?? 'metric', 'note'].map(h =>
        el('th', {}, h)
      )
    );
    const rows = [...trials]
      .sort((a, b) => a.trial - b.trial)
      .map(t => {
        const link = el('button', { className: 'jp-Compute-textLink', type: 'button' },
          `trial ${t.trial}`);
        link.disabled = !t.id;
        link.onclick = () => t.id && this.actions.openRun(t.id, `${d.name} trial ${t.trial}`);
        const row = el(
          'tr',
          {},
          el('td', {}, link),
          el('td', {}, el('span', { className: statusClass(t.status) }, t.status)),
          ...names.map(n => el('td', {}, shown(t.parameters?.[n] ?? ''))),
          el('td', {}, t.primary_metric === null ? '–' : metricValue(t.primary_metric)),
          el('td', { className: 'jp-Compute-note' }, t.stop_reason ?? t.error ?? '')
        );
        return row;
      });
    this.trials.replaceChildren(
      el('h3', {}, `Trials (${trials.length})`),
      trials.length
        ? el('table', { className: 'jp-Compute-files' }, el('thead', {}, head),
            el('tbody', {}, ...rows))
        : none('No trial has started yet.')
    );
    this.trials.dataset.section = 'trials';
  }

  /**
   * A pipeline's steps: the graph the server drew (`svgdag`: one box per step in its
   * state's colour, arrows to what depends on it) and a table; a click on a step's box
   * or its name opens the step's run.
   */
  private renderSteps(d: IRunDetail): void {
    if (d.kind !== 'pipeline' || !d.steps) {
      this.steps.hidden = true;
      return;
    }
    this.steps.hidden = false;
    const steps = d.steps;
    const open = (step: IStep | undefined) => {
      if (step?.run_id) {
        this.actions.openRun(step.run_id, `${d.name} · ${step.name}`);
      }
    };
    const graph = el('div', { className: 'jp-Compute-dag' });
    // Drawn by our own server from escaped names; nothing of a step's text is markup.
    graph.innerHTML = d.steps_svg ?? '';
    for (const box of Array.from(graph.querySelectorAll<SVGGElement>('.jc-dag-step'))) {
      const step = steps.find(s => s.name === box.dataset.step);
      if (step?.run_id) {
        box.classList.add('jp-mod-link');
        box.setAttribute('tabindex', '0');
        box.setAttribute('role', 'link');
        box.onclick = () => open(step);
        box.onkeydown = (event: KeyboardEvent) => {
          if (event.key === 'Enter') {
            open(step);
          }
        };
      }
    }
    const rows = steps.map(s => {
      const link = el('button', { className: 'jp-Compute-textLink', type: 'button' }, s.name);
      link.disabled = !s.run_id;
      link.onclick = () => open(s);
      const row = el(
        'tr',
        {},
        el('td', {}, link),
        el('td', {}, el('span', { className: statusClass(stepState(s).replace(' ', '')) },
          stepState(s))),
        el('td', {}, [s.kind, s.target].filter(Boolean).join(' on ')),
        el('td', {}, (s.depends_on ?? []).join(', ') || '–'),
        el('td', { className: 'jp-Compute-note' },
          (s.reason ?? s.error ?? '').replace(/^skipped: /, ''))
      );
      row.dataset.step = s.name;
      return row;
    });
    const head = el('tr', {}, ...['step', 'state', 'where', 'after', 'note'].map(h =>
      el('th', {}, h)));
    this.steps.replaceChildren(
      el('h3', {}, `Steps (${steps.length})`),
      steps.length ? graph : none('No steps.'),
      steps.length
        ? el('table', { className: 'jp-Compute-files' }, el('thead', {}, head),
            el('tbody', {}, ...rows))
        : ''
    );
    this.steps.dataset.section = 'steps';
  }

  /** The snapshot's files: asked for once, when the person opens the list. */
  private renderFiles(d: IRunDetail): void {
    const list = el('div', {}, 'Loading…');
    const details = el(
      'details',
      {},
      el('summary', {}, `Snapshot files (${d.snapshot?.files ?? 0})`),
      list
    );
    let asked = false;
    details.addEventListener('toggle', async () => {
      if (!details.open || asked) {
        return;
      }
      asked = true;
      try {
        const { files, total } = await api.snapshot(this.runId);
        list.replaceChildren(
          el(
            'table',
            { className: 'jp-Compute-files' },
            el(
              'tbody',
              {},
              ...files.map(f =>
                el('tr', {}, el('td', { className: 'jp-Compute-path' }, f.path),
                  el('td', { className: 'jp-Compute-size' }, size(f.size)))
              )
            )
          ),
          ...(total > files.length ? [none(`and ${total - files.length} more`)] : []),
          ...(total === 0 ? [none('The snapshot\'s manifest is not in this workspace.')] : [])
        );
      } catch (reason) {
        asked = false;
        list.replaceChildren(el('span', { className: 'jp-Compute-rowError' },
          describe(reason)));
      }
    });
    this.files.replaceChildren(details);
    this.files.dataset.section = 'snapshot-files';
  }

  private detail: IRunDetail | null = null;
  private polls = 0;
  private endedSeen = false;
  private metricsKey = '';
  private backoff = INTERVAL;
  private timer = 0;
  private objectUrl = '';
  private readonly chartsByName = new Map<string, MetricChart>();
  private readonly endedTrials = new Map<string, ISeries>();
  private readonly header = el('header', { className: 'jp-Compute-pageHeader' });
  private readonly note = el('div', { className: 'jp-Compute-banner', hidden: true });
  private readonly facts = el('div', { className: 'jp-Compute-cards' });
  private readonly charts = el('section', { className: 'jp-Compute-card jp-Compute-metrics' });
  private readonly outputs = el('section', { className: 'jp-Compute-card' });
  private readonly outputList = el('div', {});
  private readonly preview = el('div', { className: 'jp-Compute-preview' });
  private readonly trials = el('section', { className: 'jp-Compute-card', hidden: true });
  private readonly steps = el('section', { className: 'jp-Compute-card', hidden: true });
  private readonly files = el('section', { className: 'jp-Compute-card' });
  private readonly themeWatch = new MutationObserver(() => {
    for (const chart of this.chartsByName.values()) {
      void chart.redraw();
    }
  });
}

/** A metric's numeric values against their steps (or their order, without steps). */
function scalarSeries(name: string, records: IMetricRecord[]): ISeries | null {
  const points = records.filter(
    r => (r.kind ?? 'scalar') === 'scalar' && typeof r.value === 'number'
  );
  if (!points.length) {
    return null;
  }
  return {
    name,
    x: points.map((r, i) => (typeof r.step === 'number' ? r.step : i + 1)),
    y: points.map(r => r.value as number)
  };
}

/** The page: Overview and Log tabs. */
export class RunPage extends TabPanel {
  constructor(runId: string, actions: IRunPageActions) {
    super();
    this.addClass('jp-Compute-runTabs');
    this.overview = new RunOverview(runId, actions);
    const log = new LogView(runId);
    log.title.label = 'Log';
    this.addWidget(this.overview);
    this.addWidget(log);
  }

  readonly overview: RunOverview;
}
