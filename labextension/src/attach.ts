/**
 * The "Attach target" form: a name, a kind, and the options that kind declares.
 * The server validates exactly as `jupyter-compute attach` does; its message is
 * shown inline under the form, and nothing is written unless the target checks out.
 */
import { Widget } from '@lumino/widgets';

import { api, ApiError, IKind, isNetworkError } from './api';
import { el } from './format';

export class AttachForm extends Widget {
  constructor(private readonly onAttached: (name: string) => void) {
    super({ node: el('form', { className: 'jp-Compute-attach' }) });
    const form = this.node as HTMLFormElement;
    this.name = el('input', {
      className: 'jp-mod-styled jp-Compute-input',
      name: 'name',
      placeholder: 'name, e.g. gpu-vm',
      required: false
    });
    this.kind = el('select', {
      className: 'jp-mod-styled jp-Compute-input',
      name: 'kind'
    });
    this.kind.append(el('option', { value: '' }, 'kind…'));
    this.kind.onchange = () => this.showOptions();
    this.replace = el('input', { type: 'checkbox', name: 'replace' });
    this.message = el('div', { className: 'jp-Compute-formError' });
    this.submit = el(
      'button',
      { type: 'submit', className: 'jp-mod-styled jp-mod-accept' },
      'Attach'
    );
    form.append(
      el('label', {}, 'Name', this.name),
      el('label', {}, 'Kind', this.kind),
      this.fields,
      el(
        'label',
        { className: 'jp-Compute-check' },
        this.replace,
        'replace a target of that name'
      ),
      el('div', { className: 'jp-Compute-formButtons' }, this.submit),
      this.message
    );
    form.onsubmit = event => {
      event.preventDefault();
      void this.attach();
    };
    void this.loadKinds();
  }

  private async loadKinds(): Promise<void> {
    try {
      this.kinds = (await api.kinds()).kinds;
    } catch (reason) {
      this.say(describe(reason));
      return;
    }
    for (const k of this.kinds) {
      this.kind.append(el('option', { value: k.kind }, k.kind));
    }
  }

  /** One field per option of the chosen kind; its help text is the placeholder. */
  private showOptions(): void {
    this.fields.replaceChildren();
    const kind = this.kinds.find(k => k.kind === this.kind.value);
    for (const option of kind?.options ?? []) {
      const label = option.name.replace(/_/g, '-');
      if (option.type === 'bool') {
        this.fields.append(
          el(
            'label',
            { className: 'jp-Compute-check', title: option.help },
            el('input', { type: 'checkbox', name: option.name }),
            label
          )
        );
      } else {
        this.fields.append(
          el(
            'label',
            { title: option.help },
            label,
            el('input', {
              className: 'jp-mod-styled jp-Compute-input',
              name: option.name,
              placeholder: option.help,
              inputMode: option.type === 'str' ? 'text' : 'decimal'
            })
          )
        );
      }
    }
  }

  private async attach(): Promise<void> {
    const options: Record<string, string | boolean> = {};
    for (const input of Array.from(this.fields.querySelectorAll('input'))) {
      options[input.name] =
        input.type === 'checkbox' ? input.checked : input.value.trim();
    }
    this.say('Checking the target…', false);
    this.submit.disabled = true;
    try {
      const target = await api.attach({
        name: this.name.value.trim(),
        kind: this.kind.value,
        options,
        replace: this.replace.checked
      });
      this.say('');
      (this.node as HTMLFormElement).reset();
      this.fields.replaceChildren();
      this.onAttached(target.name);
    } catch (reason) {
      this.say(describe(reason));
    } finally {
      this.submit.disabled = false;
    }
  }

  private say(text: string, error = true): void {
    this.message.textContent = text;
    this.message.classList.toggle('jp-mod-error', error && !!text);
  }

  private kinds: IKind[] = [];
  private readonly name: HTMLInputElement;
  private readonly kind: HTMLSelectElement;
  private readonly replace: HTMLInputElement;
  private readonly fields = el('div', { className: 'jp-Compute-fields' });
  private readonly message: HTMLDivElement;
  private readonly submit: HTMLButtonElement;
}

/** One line for a failed request: the server's own message where there is one. */
export function describe(reason: unknown): string {
  if (reason instanceof ApiError) {
    return reason.message;
  }
  if (isNetworkError(reason)) {
    return 'The server does not answer; try again once it is back.';
  }
  return String(reason);
}
