/** Small pure formatters and a DOM helper shared by the views. */

/** `el('span', {className: 'x'}, 'text')`: an element with properties and children. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> & Record<string, unknown> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

/** `1m 05s`, `2h 03m`, `12s`, `0.4s`: how long a run has been going (or went). */
export function duration(
  started: string | null,
  ended: string | null,
  now = Date.now()
): string {
  if (!started) {
    return '–';
  }
  const end = ended ? Date.parse(ended) : now;
  const exact = Math.max(0, (end - Date.parse(started)) / 1000);
  if (exact < 10) {
    return `${exact.toFixed(1)}s`; // short runs are common: "0s" would say nothing
  }
  const secs = Math.round(exact);
  if (secs < 60) {
    return `${secs}s`;
  }
  const mins = Math.floor(secs / 60);
  if (mins < 60) {
    return `${mins}m ${String(secs % 60).padStart(2, '0')}s`;
  }
  return `${Math.floor(mins / 60)}h ${String(mins % 60).padStart(2, '0')}m`;
}

/** A metric value in at most 4 significant digits. */
export function metricValue(value: number): string {
  if (Number.isInteger(value)) {
    return String(value);
  }
  return Number(value.toPrecision(4)).toString();
}

/** `1 / 0–4` for current nodes and bounds; `?` where a bound is unknown. */
export function nodes(
  n: { current: number | null; min: number | null; max: number | null } | null
): string {
  if (!n) {
    return '';
  }
  const v = (x: number | null) => (x === null || x === undefined ? '?' : String(x));
  return `${v(n.current)} / ${v(n.min)}–${v(n.max)}`;
}

/** The CSS modifier for a status badge. */
/** A pipeline step's state as people read it: Reused for a completed step that ran
 * nothing (an unchanged one had completed), Not started, or its run's status. */
export function stepState(step: { status: string; reused: boolean }): string {
  if (step.reused && step.status === 'Completed') {
    return 'Reused';
  }
  return step.status === 'NotStarted' ? 'Not started' : step.status;
}

export function statusClass(status: string): string {
  return `jp-Compute-badge jp-Compute-badge-${status.toLowerCase()}`;
}
