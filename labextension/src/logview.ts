/**
 * A run's log in a main-area tab. It asks for the bytes after the last offset it
 * has, once a second, and stops once the server says the run has ended and the
 * log is complete. A lost server is retried with a growing pause.
 */
import { Widget } from '@lumino/widgets';

import { api, ApiError, isNetworkError } from './api';
import { el, statusClass } from './format';

const INTERVAL = 1000;
const MAX_BACKOFF = 10000;

export class LogView extends Widget {
  constructor(readonly runId: string) {
    super();
    this.addClass('jp-Compute-log');
    this.node.append(this.header, this.pre);
    this.header.append(this.badge, this.note);
    this.pre.className = 'jp-Compute-logText';
    this.note.textContent = 'Loading…';
    void this.tail();
  }

  /** Whether the whole log has arrived (the run has ended). */
  get done(): boolean {
    return this.finished;
  }

  dispose(): void {
    window.clearTimeout(this.timer);
    super.dispose();
  }

  private async tail(): Promise<void> {
    if (this.isDisposed) {
      return;
    }
    let wait = INTERVAL;
    try {
      const chunk = await api.log(this.runId, this.offset);
      if (chunk.text) {
        const atEnd =
          this.node.scrollTop + this.node.clientHeight >= this.node.scrollHeight - 4;
        this.pre.append(document.createTextNode(chunk.text));
        if (atEnd) {
          this.node.scrollTop = this.node.scrollHeight;
        }
      }
      this.offset = chunk.next_offset;
      this.badge.className = statusClass(chunk.status);
      this.badge.textContent = chunk.status;
      if (chunk.done) {
        this.finished = true;
        this.note.textContent = `Log complete (${this.offset} bytes).`;
        return;
      }
      this.note.textContent = 'Following the log…';
      this.backoff = INTERVAL;
    } catch (reason) {
      if (reason instanceof ApiError && reason.status === 404) {
        this.note.textContent = reason.message;
        return;
      }
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF);
      wait = this.backoff;
      this.note.textContent = isNetworkError(reason)
        ? 'The server does not answer; retrying…'
        : `${reason}; retrying…`;
    }
    this.timer = window.setTimeout(() => void this.tail(), wait);
  }

  private offset = 0;
  private finished = false;
  private backoff = INTERVAL;
  private timer = 0;
  private readonly header = el('div', { className: 'jp-Compute-logHeader' });
  private readonly badge = el('span', { className: statusClass('queued') });
  private readonly note = el('span', { className: 'jp-Compute-logNote' });
  private readonly pre = el('pre');
}

/**
 * A notebook run's executed notebook, rendered by the server (nbconvert) and shown
 * in a sandboxed frame: read-only, and no script from the run's outputs can run.
 */
export class NotebookView extends Widget {
  constructor(readonly runId: string) {
    super();
    this.addClass('jp-Compute-notebook');
    this.node.append(this.note, this.frame);
    this.frame.setAttribute('sandbox', '');
    this.frame.title = `Executed notebook of ${runId}`;
    void this.load();
  }

  async load(): Promise<void> {
    const dark = document.body.dataset.jpThemeLight === 'false';
    this.note.textContent = 'Rendering the executed notebook…';
    try {
      const view = await api.notebook(this.runId, dark ? 'dark' : 'light');
      this.note.textContent = `${view.name} — run ${view.status}`;
      this.frame.srcdoc = view.html;
    } catch (reason) {
      this.note.textContent =
        reason instanceof ApiError ? reason.message : String(reason);
    }
  }

  private readonly note = el('div', { className: 'jp-Compute-logHeader' });
  private readonly frame = el('iframe', { className: 'jp-Compute-frame' });
}
