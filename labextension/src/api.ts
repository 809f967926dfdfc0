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

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  const url = URLExt.join(settings.baseUrl, 'jupyter-compute', 'api', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
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
    request<INotebookView>(`runs/${enc(id)}/notebook?theme=${theme}`)
};
