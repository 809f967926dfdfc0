/**
 * Typed calls to the server extension (`<base_url>/jupyter-compute/api/`).
 * Every request goes through `ServerConnection.makeRequest` (token and XSRF).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface INodes {
  current: number | null;
  min: number | null;
  max: number | null;
  pending: number | null;
}

export interface ITarget {
  name: string;
  kind: string;
  options: Record<string, unknown>;
  status: 'ready' | 'running' | 'stopped' | 'unreachable' | 'error';
  cluster: boolean;
  nodes: INodes | null;
  error: string | null;
}

export interface IKindOption {
  name: string;
  type: 'str' | 'int' | 'float' | 'bool';
  help: string;
}

export interface IKind {
  kind: string;
  options: IKindOption[];
}

export interface IMetric {
  name: string;
  value: number;
  step: number | null;
}

export interface IRun {
  id: string;
  name: string;
  target: string;
  kind: 'script' | 'notebook' | 'sweep' | string;
  status: string;
  created: string;
  started: string | null;
  ended: string | null;
  exit_code: number | null;
  error: string | null;
  metric: IMetric | null;
  unreachable: string | null;
  tags: Record<string, unknown>;
  parent_id: string | null;
  /** A pipeline's steps, in topological order. */
  steps?: IStep[];
}

export interface IGit {
  repository: string | null;
  branch: string | null;
  commit: string | null;
  dirty: boolean | null;
}

export interface IFile {
  path: string;
  size: number;
}

/** A sweep's trial, as the sweep's `show --json` lists it. */
export interface ITrial {
  id: string | null;
  trial: number;
  parameters: Record<string, unknown>;
  status: string;
  primary_metric: number | null;
  intervals: number;
  stop_reason: string | null;
  error: string | null;
}

/** Everything the run page shows (`runs/ID/detail`). */
export interface IRunDetail extends IRun {
  script: string;
  arguments: string[];
  source_dir: string;
  snapshot: {
    id: string;
    files: number;
    bytes: number;
    new_files: number;
    new_bytes: number;
  };
  git: IGit;
  environment_variables: Record<string, string>;
  params: Record<string, unknown>;
  /** The run this one is part of (a sweep, for a trial). */
  parent: { id: string; name: string; kind: string } | null;
  /** null when not asked for (`detail(id, false)`). */
  outputs: IFile[] | null;
  // a sweep's
  children?: ITrial[];
  primary_metric?: { name?: string; goal?: string };
  sampling?: string;
  policy?: string;
  max_total_runs?: number | null;
  max_concurrent_runs?: number | null;
  max_duration_minutes?: number | null;
  ended_by?: string | null;
  best_run?: { id: string; trial: number; primary_metric: number | null } | null;
  warnings?: string[];
  // a pipeline's
  /** The steps' graph as SVG, drawn by the server (`svgdag`), one box per step. */
  steps_svg?: string;
}

/** One step of a pipeline (`Pipeline.steps()`). */
export interface IStep {
  name: string;
  run_id: string | null;
  /** A run status, or NotStarted / Skipped. */
  status: string;
  reused: boolean;
  target: string;
  kind: string;
  depends_on: string[];
  reason?: string | null;
  error?: string | null;
}

/** One logged value: `{value, step, time, kind}`. */
export interface IMetricRecord {
  value: unknown;
  step: number | null;
  time: number | string | null;
  kind: string;
}

export interface ILogChunk {
  run_id: string;
  offset: number;
  next_offset: number;
  text: string;
  status: string;
  done: boolean;
}

export interface INotebookView {
  run_id: string;
  name: string;
  status: string;
  html: string;
}

export const TERMINAL = ['Completed', 'Failed', 'Canceled', 'TimedOut'];
export const STATUSES = ['Queued', 'Preparing', 'Running', ...TERMINAL];

/** An error the server answered: `{error, message}` with an HTTP status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    message: string
  ) {
    super(message);
  }
}

/** The server did not answer at all (stopped, restarting, network down). */
export function isNetworkError(reason: unknown): boolean {
  return reason instanceof ServerConnection.NetworkError;
}

const settings = ServerConnection.makeSettings();

function apiUrl(path: string): string {
  return URLExt.join(settings.baseUrl, 'jupyter-compute', 'api', path);
}

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const response = await ServerConnection.makeRequest(apiUrl(path), init, settings);
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new ApiError(
      response.status,
      body?.error ?? response.statusText,
      body?.message ?? `${response.status} ${response.statusText}`
    );
  }
  return body as T;
}

function post<T>(path: string, body: unknown = {}): Promise<T> {
  return request<T>(path, { method: 'POST', body: JSON.stringify(body) });
}

const enc = encodeURIComponent;

export const api = {
  targets: () =>
    request<{ workspace: string; targets: ITarget[] }>('targets'),
  kinds: () => request<{ kinds: IKind[] }>('kinds'),
  attach: (body: {
    name: string;
    kind: string;
    options: Record<string, string | boolean>;
    replace?: boolean;
  }) => post<ITarget>('targets', body),
  detach: (name: string) =>
    request<null>(`targets/${enc(name)}`, { method: 'DELETE' }),
  startStop: (name: string, action: 'start' | 'stop') =>
    post<ITarget>(`targets/${enc(name)}/${action}`),
  runs: (limit: number, status: string) =>
    request<{ workspace: string; runs: IRun[] }>(
      `runs?limit=${limit}` + (status ? `&status=${enc(status)}` : '')
    ),
  log: (id: string, offset: number) =>
    request<ILogChunk>(`runs/${enc(id)}/log?offset=${offset}`),
  cancel: (id: string) => post<IRun>(`runs/${enc(id)}/cancel`),
  notebook: (id: string, theme: 'light' | 'dark') =>
    request<INotebookView>(`runs/${enc(id)}/notebook?theme=${theme}`),
  detail: (id: string, outputs = true) =>
    request<IRunDetail>(`runs/${enc(id)}/detail` + (outputs ? '' : '?outputs=0')),
  snapshot: (id: string) =>
    request<{ run_id: string; total: number; files: IFile[] }>(`runs/${enc(id)}/snapshot`),
  metrics: (id: string) =>
    request<{ run_id: string; metrics: Record<string, IMetricRecord[]> }>(
      `runs/${enc(id)}/metrics`
    ),
  outputNotebook: (id: string, path: string, theme: 'light' | 'dark') =>
    request<{ html: string }>(
      `runs/${enc(id)}/outputs/notebook?path=${enc(path)}&theme=${theme}`
    ),
  /** An output's bytes (for a preview); errors as for every other call. */
  outputBlob: async (id: string, path: string): Promise<Blob> => {
    const response = await ServerConnection.makeRequest(
      apiUrl(`runs/${enc(id)}/outputs/file?path=${enc(path)}`),
      {},
      settings
    );
    if (!response.ok) {
      let body: any = null;
      try {
        body = await response.json();
      } catch {
        body = null;
      }
      throw new ApiError(
        response.status,
        body?.error ?? response.statusText,
        body?.message ?? `${response.status} ${response.statusText}`
      );
    }
    return response.blob();
  },
  /**
   * The URL that downloads an output (the browser streams it to disk). Like
   * JupyterLab's own file downloads it relies on the login cookie, with the XSRF
   * token from the cookie added.
   */
  outputUrl: (id: string, path: string): string => {
    const url = new URL(
      apiUrl(`runs/${enc(id)}/outputs/file?path=${enc(path)}`),
      window.location.href
    );
    const xsrf = document.cookie.match('\\b_xsrf=([^;]*)\\b');
    if (xsrf) {
      url.searchParams.append('_xsrf', xsrf[1]);
    }
    return url.toString();
  }
};
