/**
 * When a notebook's kernel restarts or dies, jupyter_compute's live views in it become
 * their static summaries, as the kernel makes them when it is shut down.
 *
 * A live view's output carries the widget view and, beside it, its static summary
 * (text/html with a `jupyter-compute-…` class). JupyterLab forgets a notebook's
 * executions the moment a restart is asked for, before the kernel hears of it, so the
 * kernel's own update can no longer reach these outputs: this plugin drops the widget
 * view from them instead, so the notebook saved afterwards shows the summary and never
 * "Error displaying widget". Notebooks are found through the document registry's
 * "Notebook" factory (duck-typed: no @jupyterlab/notebook dependency).
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';

const WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json';
const OURS = /class="jupyter-compute-(run|sweep|cluster|pipeline)"/;
const GONE = new Set(['restarting', 'autorestarting', 'dead']);

interface IOutput {
  data: Record<string, unknown>;
  toJSON(): Record<string, unknown>;
}

interface IOutputs {
  length: number;
  get(index: number): IOutput;
  set(index: number, value: Record<string, unknown>): void;
}

interface INotebookLike {
  sessionContext?: {
    statusChanged: { connect(fn: (sender: unknown, status: string) => void): void };
  };
  content?: {
    model?: { cells: Iterable<{ type: string; outputs?: IOutputs }> } | null;
  };
}

/** Each live view's output in `outputs` becomes its static summary. */
export function makeStatic(outputs: IOutputs): number {
  let changed = 0;
  for (let i = 0; i < outputs.length; i++) {
    const data = outputs.get(i).data;
    const html = data['text/html'];
    if (!(WIDGET_VIEW in data) || typeof html !== 'string' || !OURS.test(html)) {
      continue;
    }
    const json = outputs.get(i).toJSON();
    const kept = { ...(json.data as Record<string, unknown>) };
    delete kept[WIDGET_VIEW];
    outputs.set(i, { ...json, data: kept });
    changed++;
  }
  return changed;
}

function watch(panel: INotebookLike, seen: WeakSet<object>): void {
  const session = panel.sessionContext;
  if (!session || seen.has(panel)) {
    return;
  }
  seen.add(panel);
  session.statusChanged.connect((_sender, status) => {
    const model = panel.content?.model;
    if (!GONE.has(status) || !model) {
      return;
    }
    for (const cell of model.cells) {
      if (cell.type === 'code' && cell.outputs) {
        makeStatic(cell.outputs);
      }
    }
  });
}

export const staticOutputsPlugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-compute:static-outputs',
  description: "A kernel's end makes jupyter_compute's live views static summaries.",
  autoStart: true,
  activate: (app: JupyterFrontEnd) => {
    const seen = new WeakSet<object>();
    void app.restored.then(() => {
      for (const widget of app.shell.widgets('main')) {
        watch(widget as unknown as INotebookLike, seen);
      }
      const factory = app.docRegistry.getWidgetFactory('Notebook');
      factory?.widgetCreated.connect((_sender, widget) =>
        watch(widget as unknown as INotebookLike, seen)
      );
    });
  }
};
