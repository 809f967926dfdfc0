/**
 * jupyter-compute: a Compute sidebar (targets, runs) with log and notebook tabs,
 * backed by the `jupyter_compute.server` extension.
 */
import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { IRun } from './api';
import { LogView, NotebookView } from './logview';
import { ComputePanel } from './panel';
import { RunPage } from './runpage';
import { staticOutputsPlugin } from './staticoutputs';

const computeIcon = new LabIcon({
  name: 'jupyter-compute:compute',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M4 3h16a1 1 0 0 1 1 1v5a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1zm1 2v3h14V5z' +
    'M4 14h16a1 1 0 0 1 1 1v5a1 1 0 0 1-1 1H4a1 1 0 0 1-1-1v-5a1 1 0 0 1 1-1zm1 2v3h14v-3z"/>' +
    '<circle cx="7" cy="6.5" r="1"/><circle cx="7" cy="17.5" r="1"/></g></svg>'
});

const COMMANDS = {
  openLog: 'jupyter-compute:open-log',
  openNotebook: 'jupyter-compute:open-notebook',
  openRun: 'jupyter-compute:open-run'
};

/** One main-area tab per run and view; opening it again brings it to the front. */
function opener(
  app: JupyterFrontEnd,
  prefix: string,
  make: (runId: string) => Widget,
  label: (name: string) => string
): (runId: string, name: string) => void {
  const open = new Map<string, MainAreaWidget>();
  return (runId: string, name: string) => {
    let widget = open.get(runId);
    if (!widget || widget.isDisposed) {
      widget = new MainAreaWidget({ content: make(runId) });
      widget.id = `${prefix}-${runId}`;
      widget.title.label = label(name);
      widget.title.caption = runId;
      widget.title.icon = computeIcon;
      widget.title.closable = true;
      open.set(runId, widget);
      widget.disposed.connect(() => open.delete(runId));
      app.shell.add(widget, 'main');
    }
    app.shell.activateById(widget.id);
  };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-compute:plugin',
  description: 'A Compute sidebar: targets, runs, live logs.',
  autoStart: true,
  optional: [ILayoutRestorer],
  activate: (app: JupyterFrontEnd, restorer: ILayoutRestorer | null) => {
    const openLog = opener(
      app,
      'jupyter-compute-log',
      id => new LogView(id),
      name => `Log: ${name}`
    );
    const openNotebook = opener(
      app,
      'jupyter-compute-notebook',
      id => new NotebookView(id),
      name => `Executed: ${name}`
    );
    // `panel` is made below; the page only calls back once it exists.
    let panel: ComputePanel | null = null;
    const openRun: (runId: string, name: string) => void = opener(
      app,
      'jupyter-compute-run',
      id =>
        new RunPage(id, {
          openRun: (child, name) => openRun(child, name),
          changed: () => panel?.refreshNow()
        }),
      name => `Run: ${name}`
    );
    app.commands.addCommand(COMMANDS.openRun, {
      label: 'Open Run Page',
      execute: args => openRun(String(args.runId), String(args.name ?? args.runId))
    });
    app.commands.addCommand(COMMANDS.openLog, {
      label: 'Open Run Log',
      execute: args => openLog(String(args.runId), String(args.name ?? args.runId))
    });
    app.commands.addCommand(COMMANDS.openNotebook, {
      label: 'Open Executed Notebook',
      execute: args =>
        openNotebook(String(args.runId), String(args.name ?? args.runId))
    });

    panel = new ComputePanel({
      openRun: (run: IRun) =>
        void app.commands.execute(COMMANDS.openRun, { runId: run.id, name: run.name }),
      openLog: (run: IRun) =>
        void app.commands.execute(COMMANDS.openLog, { runId: run.id, name: run.name }),
      openNotebook: (run: IRun) =>
        void app.commands.execute(COMMANDS.openNotebook, {
          runId: run.id,
          name: run.name
        })
    });
    panel.title.icon = computeIcon;
    app.shell.add(panel, 'left', { rank: 600 });
    restorer?.add(panel, panel.id);
  }
};

export default [plugin, staticOutputsPlugin];
