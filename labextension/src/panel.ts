/**
 * The Compute sidebar: the workspace's targets and its runs, kept live.
 *
 * It polls (2 s) only while the panel is visible and the browser tab is shown.
 * Polling rather than a stream: each answer is a complete picture, so a server
 * restart needs no resubscription — the next answer after a failed one simply
 * brings the panel up to date, and the panel says it reconnected. Failures back
 * off to one request every 10 s.
 */
import { showDialog, Dialog } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { api, IRun, isNetworkError, ITarget, STATUSES, TERMINAL } from './api';
import { AttachForm, describe } from './attach';
import { duration, el, metricValue, nodes, statusClass, stepState } from './format';

const INTERVAL = 2000;
const MAX_INTERVAL = 10000;
const LIMIT = 50;

export interface IPanelActions {
  openRun(run: IRun): void;
  openLog(run: IRun): void;
  openNotebook(run: IRun): void;
}

interface IRunRow {
  root: HTMLElement;
  toggle: HTMLButtonElement;
  tags: HTMLElement;
  steps: HTMLElement;
  badge: HTMLElement;
  meta: HTMLElement;
  metric: HTMLElement;
  cancel: HTMLButtonElement;
  notebook: HTMLButtonElement;
  run: IRun;
}

export class ComputePanel extends Widget {
  constructor(private readonly actions: IPanelActions) {
    super();
    this.id = 'jupyter-compute-panel';
    this.addClass('jp-Compute-panel');
    this.title.caption = 'Compute: targets and runs';

    const attachButton = el(
      'button',
      { className: 'jp-Compute-link', type: 'button' },
      'Attach target'
    );
    attachButton.onclick = () => {
      this.form.setHidden(!this.form.isHidden);
    };
    this.form.hide();
    this.filter.append(el('option', { value: '' }, 'all'));
    for (const s of STATUSES) {
      this.filter.append(el('option', { value: s }, s));
    }
    this.filter.onchange = () => void this.poll.refresh();
    this.search.oninput = () => this.renderRuns(this.lastRuns);

    this.node.append(
      el('header', { className: 'jp-Compute-title' }, 'Compute', this.workspace),
      this.banner,
      el(
        'section',
        { className: 'jp-Compute-section' },
        el('h3', {}, 'Targets', attachButton),
        this.form.node,
        this.targetList
      ),
      el(
        'section',
        { className: 'jp-Compute-section' },
        el('h3', {}, 'Runs', el('label', {}, 'status ', this.filter)),
        el('div', { className: 'jp-Compute-searchLine' }, this.search),
        this.runList
      )
    );

    this.poll = new Poll({
      auto: false,
      factory: () => this.refresh(),
      frequency: { interval: INTERVAL, backoff: true, max: MAX_INTERVAL },
      name: 'jupyter-compute:panel',
      standby: () => (this.isVisible ? 'when-hidden' : true)
    });
  }

  dispose(): void {
    this.poll.dispose();
    this.form.dispose();
    super.dispose();
  }

  /** Ask now instead of at the next tick. */
  refreshNow(): void {
    void this.poll.refresh();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    void this.poll.start();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    void this.poll.refresh();
  }

  private async refresh(): Promise<void> {
    try {
      const [targets, runs] = await Promise.all([
        api.targets(),
        api.runs(LIMIT, this.filter.value)
      ]);
      this.workspace.textContent = targets.workspace;
      this.workspace.title = targets.workspace;
      this.renderTargets(targets.targets);
      this.renderRuns(runs.runs);
      if (this.lost) {
        this.lost = false;
        this.say('Reconnected to the server.', 'ok');
        window.setTimeout(() => {
          if (!this.lost) {
            this.say('');
          }
        }, 5000);
      } else if (this.banner.classList.contains('jp-mod-error')) {
        this.say('');
      }
    } catch (reason) {
      if (isNetworkError(reason)) {
        this.lost = true;
        this.say('Lost the server — reconnecting…', 'error');
      } else {
        this.say(describe(reason), 'error');
      }
      throw reason; // the poll backs off
    }
  }

  private say(text: string, kind: 'ok' | 'error' | '' = ''): void {
    this.banner.textContent = text;
    this.banner.className = 'jp-Compute-banner' + (kind ? ` jp-mod-${kind}` : '');
    this.banner.hidden = !text;
  }

  // -- targets ---------------------------------------------------------------

  private renderTargets(targets: ITarget[]): void {
    const key = JSON.stringify(targets);
    if (key === this.targetsKey) {
      return;
    }
    this.targetsKey = key;
    this.targetList.replaceChildren(...targets.map(t => this.targetRow(t)));
  }

  private targetRow(t: ITarget): HTMLElement {
    const row = el('div', { className: 'jp-Compute-row jp-Compute-target' });
    row.dataset.target = t.name;
    const status = el('span', { className: statusClass(t.status) }, t.status);
    const line = el(
      'div',
      { className: 'jp-Compute-line' },
      el('span', { className: 'jp-Compute-name' }, t.name),
      el('span', { className: 'jp-Compute-kind' }, t.kind),
      status
    );
    row.append(line);
    if (t.cluster) {
      row.append(
        el(
          'div',
          {
            className: 'jp-Compute-meta jp-Compute-nodes',
            title: 'worker nodes: current / min–max'
          },
          `nodes ${nodes(t.nodes)}` +
            (t.nodes?.pending ? ` (${t.nodes.pending} pending)` : '')
        )
      );
    }
    if (t.error) {
      row.append(el('div', { className: 'jp-Compute-rowError' }, t.error));
    }
    const buttons = el('div', { className: 'jp-Compute-actions' });
    if (t.cluster) {
      const action = t.status === 'running' ? 'stop' : 'start';
      buttons.append(
        this.button(action === 'start' ? 'Start' : 'Stop', row, async () => {
          await api.startStop(t.name, action);
        })
      );
    }
    if (t.name !== 'local') {
      buttons.append(
        this.button('Detach', row, async () => {
          const answer = await showDialog({
            title: `Detach ${t.name}?`,
            body: 'Its runs stay in the workspace; only the target is forgotten.',
            buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Detach' })]
          });
          if (answer.button.accept) {
            await api.detach(t.name);
          }
        })
      );
    }
    row.append(buttons);
    return row;
  }

  /** A button that runs `action`, shows a failure under `row`, then refreshes. */
  private button(
    label: string,
    row: HTMLElement,
    action: () => Promise<void>
  ): HTMLButtonElement {
    const button = el(
      'button',
      { className: 'jp-Compute-button', type: 'button' },
      label
    );
    button.onclick = async () => {
      button.disabled = true;
      button.textContent = `${label}…`;
      try {
        await action();
      } catch (reason) {
        row.append(el('div', { className: 'jp-Compute-rowError' }, describe(reason)));
      }
      this.targetsKey = '';
      this.refreshNow();
    };
    return button;
  }

  // -- runs ------------------------------------------------------------------

  /**
   * Rows newest first; a run with a parent in the list (a sweep's trial, a pipeline's
   * step) goes under it, indented, in the order they started. The search box keeps
   * the runs whose name, id, target, status or a tag (`key=value`) contain every
   * word typed, with their parents, and the children of a run that matches.
   */
  private renderRuns(runs: IRun[]): void {
    this.lastRuns = runs;
    const seen = new Set<string>();
    for (const run of runs) {
      seen.add(run.id);
      const row = this.runs.get(run.id) ?? this.runRow(run);
      this.updateRun(row, run);
    }
    for (const [id, row] of this.runs) {
      if (!seen.has(id)) {
        row.root.remove();
        this.runs.delete(id);
      }
    }
    const children = new Map<string, IRun[]>();
    const top: IRun[] = [];
    for (const run of runs) {
      if (run.parent_id && seen.has(run.parent_id) && run.parent_id !== run.id) {
        const list = children.get(run.parent_id) ?? [];
        list.unshift(run); // the list is newest first: children read oldest first
        children.set(run.parent_id, list);
      } else {
        top.push(run);
      }
    }
    const words = this.search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const subtree = (run: IRun, depth: number, shown: boolean): HTMLElement[] => {
      const row = this.runs.get(run.id)!;
      const own = shown || matches(run, words);
      const kids = children.get(run.id) ?? [];
      const below = depth < 8 ? kids.flatMap(k => subtree(k, depth + 1, own)) : [];
      if (!own && !below.length) {
        return [];
      }
      row.root.style.setProperty('--jp-compute-depth', String(depth));
      row.root.classList.toggle('jp-Compute-child', depth > 0);
      const collapsed = this.collapsed.has(run.id) && !words.length;
      row.toggle.hidden = !kids.length;
      row.toggle.textContent = `${collapsed ? '▸' : '▾'} ${kids.length}`;
      const noun = run.kind === 'sweep' ? 'trial' : run.kind === 'pipeline' ? 'step' : 'run';
      row.toggle.title = `${collapsed ? 'Show' : 'Hide'} its ${kids.length} ${noun}` +
        (kids.length === 1 ? '' : 's');
      row.toggle.setAttribute('aria-expanded', String(!collapsed));
      return [row.root, ...(collapsed ? [] : below)];
    };
    const ordered = top.flatMap(run => subtree(run, 0, false));
    const current = Array.from(this.runList.children);
    if (
      current.length !== ordered.length ||
      current.some((node, i) => node !== ordered[i])
    ) {
      this.runList.replaceChildren(...ordered);
    }
    if (!runs.length) {
      this.runList.replaceChildren(
        el(
          'div',
          { className: 'jp-Compute-empty' },
          'No runs yet. Submit one from a notebook with %%submit.'
        )
      );
    } else if (!ordered.length) {
      this.runList.replaceChildren(
        el(
          'div',
          { className: 'jp-Compute-empty' },
          `No run matches “${this.search.value.trim()}”.`
        )
      );
    }
  }

  private runRow(run: IRun): IRunRow {
    const root = el('div', { className: 'jp-Compute-row jp-Compute-run' });
    root.dataset.runId = run.id;
    root.dataset.runName = run.name;
    const badge = el('span', {});
    const toggle = el('button', { className: 'jp-Compute-toggle', type: 'button' });
    toggle.hidden = true;
    toggle.onclick = () => {
      if (!this.collapsed.delete(run.id)) {
        this.collapsed.add(run.id);
      }
      this.renderRuns(this.lastRuns);
    };
    const tags = el('div', { className: 'jp-Compute-tags' });
    const steps = el('div', { className: 'jp-Compute-steps' });
    const meta = el('div', { className: 'jp-Compute-meta' });
    const metric = el('span', { className: 'jp-Compute-metric' });
    const log = el('button', { className: 'jp-Compute-button', type: 'button' }, 'Log');
    const notebook = el(
      'button',
      { className: 'jp-Compute-button', type: 'button' },
      'Notebook'
    );
    const cancel = el(
      'button',
      { className: 'jp-Compute-button jp-mod-warn', type: 'button' },
      'Cancel'
    );
    const row: IRunRow = {
      root, toggle, tags, steps, badge, meta, metric, cancel, notebook, run
    };
    const name = el(
      'button',
      { className: 'jp-Compute-name jp-Compute-open', type: 'button', title: run.name },
      run.name
    );
    name.onclick = () => this.actions.openRun(row.run);
    // Anywhere on the row but its buttons opens the run's page too.
    root.onclick = event => {
      if (!(event.target as HTMLElement).closest('button, a, input, select')) {
        this.actions.openRun(row.run);
      }
    };
    log.onclick = () => this.actions.openLog(row.run);
    notebook.onclick = () => this.actions.openNotebook(row.run);
    cancel.onclick = async () => {
      cancel.disabled = true;
      cancel.textContent = 'Canceling…';
      try {
        this.updateRun(row, await api.cancel(row.run.id));
      } catch (reason) {
        cancel.disabled = false;
        cancel.textContent = 'Cancel';
        meta.textContent = describe(reason);
      }
      this.refreshNow();
    };
    root.append(
      el('div', { className: 'jp-Compute-line jp-Compute-runHead' }, toggle, badge, name),
      el('div', { className: 'jp-Compute-line' }, meta, metric),
      steps,
      tags,
      el('div', { className: 'jp-Compute-actions' }, log, notebook, cancel)
    );
    this.runs.set(run.id, row);
    return row;
  }

  private updateRun(row: IRunRow, run: IRun): void {
    row.run = { ...row.run, ...run, metric: run.metric ?? row.run.metric };
    row.badge.className = statusClass(run.status);
    row.badge.textContent = run.status;
    row.badge.title = run.error ?? run.unreachable ?? '';
    row.meta.textContent = `${run.target} · ${duration(run.started, run.ended)}`;
    row.metric.textContent = row.run.metric
      ? `${row.run.metric.name} ${metricValue(row.run.metric.value)}`
      : '';
    const tags = Object.entries(run.tags ?? {}).map(([k, v]) =>
      v === '' || v === null ? k : `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`
    );
    if (tags.join('\n') !== row.tags.dataset.key) {
      row.tags.dataset.key = tags.join('\n');
      row.tags.replaceChildren(
        ...tags.map(t => el('span', { className: 'jp-Compute-tag', title: t }, t))
      );
    }
    row.tags.hidden = !tags.length;
    this.renderSteps(row, run);
    row.notebook.hidden = run.kind !== 'notebook';
    const ended = TERMINAL.includes(run.status);
    row.cancel.hidden = ended;
    if (ended) {
      row.cancel.disabled = false;
      row.cancel.textContent = 'Cancel';
    }
  }

  /** A pipeline's steps as a strip of marks, one per step in its state's colour. */
  private renderSteps(row: IRunRow, run: IRun): void {
    const steps = run.steps ?? [];
    const key = JSON.stringify(steps.map(s => [s.name, stepState(s)]));
    row.steps.hidden = !steps.length;
    if (!steps.length || key === row.steps.dataset.key) {
      return;
    }
    row.steps.dataset.key = key;
    const done = steps.filter(s => s.status === 'Completed').length;
    row.steps.replaceChildren(
      ...steps.map(s => {
        const state = stepState(s);
        const mark = el('span', {
          className: `jp-Compute-stepMark ${statusClass(state.replace(' ', ''))}`,
          title: `${s.name}: ${state}`
        });
        mark.dataset.step = s.name;
        return mark;
      }),
      el('span', { className: 'jp-Compute-stepCount' }, `${done}/${steps.length} steps done`)
    );
  }

  private readonly poll: Poll;
  private readonly form = new AttachForm(() => {
    this.form.hide();
    this.targetsKey = '';
    this.refreshNow();
  });
  private readonly runs = new Map<string, IRunRow>();
  private readonly workspace = el('span', { className: 'jp-Compute-workspace' });
  private readonly banner = el('div', { className: 'jp-Compute-banner', hidden: true });
  private readonly targetList = el('div', { className: 'jp-Compute-list' });
  private readonly runList = el('div', { className: 'jp-Compute-list' });
  private readonly filter = el('select', { className: 'jp-Compute-filter' });
  private readonly search = el('input', {
    className: 'jp-Compute-search',
    type: 'search',
    placeholder: 'Filter: name, status, tag',
    title: 'Runs whose name, id, target, status or a tag (key=value) contain every word'
  });
  private readonly collapsed = new Set<string>();
  private lastRuns: IRun[] = [];
  private targetsKey = '';
  private lost = false;
}


/** Whether every word is in the run's name, id, target, status, kind or a tag. */
export function matches(run: IRun, words: string[]): boolean {
  if (!words.length) {
    return true;
  }
  const tags = Object.entries(run.tags ?? {}).map(
    ([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`
  );
  const text = [run.name, run.id, run.target, run.status, run.kind, ...tags]
    .join('\n')
    .toLowerCase();
  return words.every(w => text.includes(w));
}
