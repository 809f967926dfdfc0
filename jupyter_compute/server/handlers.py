"""REST handlers of the Compute sidebar, under ``<base_url>/jupyter-compute/api/``.

::

    GET    targets                    {workspace, targets: [{name, kind, status, nodes, …}]}
    POST   targets                    attach {name, kind, options, replace}      → 201
    GET    targets/NAME               one target
    DELETE targets/NAME               detach                                     → 204
    POST   targets/NAME/start|stop    start or stop a cluster target
    GET    kinds                      installed kinds and the options each takes
    GET    runs?limit=50&status=S     newest first; a listed run's parent (a trial's sweep)
                                      comes along, just before its first child
    GET    runs/ID                    one run (the ``show --json`` shape + metric)
    GET    runs/ID/log?offset=N       {text, offset, next_offset, status, done}
    GET    runs/ID/metrics[?offset=N] all metrics, or the records after byte N
    POST   runs/ID/cancel             ask it to stop, wait for the end (briefly)
    GET    runs/ID/notebook           a notebook run's executed notebook, as HTML
    GET    runs/ID/detail[?outputs=0] the run page: the run, its parent, params, tags,
                                      outputs with sizes (not with outputs=0: listing a
                                      remote run's outputs fetches them); a pipeline's
                                      steps and their graph (``steps_svg``, svgdag)
    GET    runs/ID/snapshot           {files: [{path, size}], total}: what the run was sent
    GET    runs/ID/outputs            {outputs: [{path, size}]}
    GET    runs/ID/outputs/file?path=P   one output's bytes, as an attachment
    GET    runs/ID/outputs/notebook?path=P&theme=light|dark   an output notebook as HTML

An output path is relative to the run's ``outputs/``; one that is absolute, has ``..``
or leads outside by a symbolic link is refused with 403, one not there with 404.

Each handler calls ``jupyter_compute.api`` / ``Run`` exactly as the CLI does, in a
thread pool so that SSH reads and cancel waits never block the server's loop. Errors
are ``{"error": <kind>, "message": <what to do>}`` with 400 (bad input), 403
(unauthenticated), 404 (unknown run or target), 409 (conflict) or 502 (a target that
does not answer); anything unexpected is logged with its traceback and answered 500
with one line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import mimetypes
import os
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import httputil
from traitlets import Unicode
from traitlets.config import Configurable

from jupyter_compute import api, runinfo
from jupyter_compute.exceptions import (
    ComputeError,
    ConfigError,
    ConflictError,
    RunFailedError,
    RunNotFoundError,
    TargetError,
    UsageError,
)
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runs import Run
from jupyter_compute.targets import cluster_of, node_counts
from jupyter_compute.workspace import ENV_VAR, Workspace, find

T = TypeVar("T")

#: Blocking work (SSH and Ray reads, cancel waits, cluster start) runs here.
EXECUTOR = ThreadPoolExecutor(max_workers=8, thread_name_prefix="jupyter-compute")
#: Node counts of several targets are read side by side (a pool of its own: a task
#: of ``EXECUTOR`` waiting on tasks of ``EXECUTOR`` could starve it).
NODES_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jupyter-compute-nodes")
#: Most bytes of log one request returns; the client asks again from ``next_offset``.
MAX_LOG_CHUNK = 1024 * 1024
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
#: The largest byte offset a file can have (``off_t``); beyond it a seek overflows.
MAX_OFFSET = 2**63 - 1
_STATUSES = [s.value for s in RunStatus]
#: Primary metric and tags of ended runs (they no longer change), by run id.
_ENDED: dict[str, tuple[dict[str, Any] | None, dict[str, Any]]] = {}
#: Bytes of an output file sent per write: the file is streamed, never read whole.
OUTPUT_CHUNK = 1024 * 1024
#: The most snapshot files the run page lists (a manifest may hold many thousands).
MAX_SNAPSHOT_FILES = 2000


class JupyterCompute(Configurable):
    """Settings of the server extension (``c.JupyterCompute.workspace = "~/project"``)."""

    workspace = Unicode(
        "", config=True,
        help="Folder whose .jupyter_compute/ the Compute sidebar serves (default: "
             "$JUPYTER_COMPUTE_WORKSPACE, else the server's root folder or the nearest "
             "folder above it that has one).")

    def __init__(self, root_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root_dir = root_dir

    def resolve(self) -> Workspace:
        """A fresh ``Workspace`` (its own store connection) for one request."""
        explicit = os.path.expanduser(self.workspace) if self.workspace else None
        return find(start=self.root_dir, explicit=explicit or os.environ.get(ENV_VAR))


class NotFound(ComputeError):
    """A target, or a run's file, that is not there (answered 404)."""


def error_status(exc: BaseException) -> int:
    """The HTTP status for an error raised by the API."""
    if isinstance(exc, runinfo.OutputPathError):
        return 403 if exc.escapes else 404
    if isinstance(exc, (RunNotFoundError, NotFound)):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, RunFailedError):
        return 409
    if isinstance(exc, TargetError):
        return 502
    if isinstance(exc, (UsageError, ConfigError, ComputeError)):
        return 400
    if isinstance(exc, tornado.web.HTTPError):
        return exc.status_code
    return 500


class ComputeHandler(APIHandler):
    """JSON in, JSON out; blocking calls go to ``EXECUTOR``."""

    @property
    def compute(self) -> JupyterCompute:
        return self.settings["jupyter_compute"]  # type: ignore[no-any-return]

    async def blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(EXECUTOR, functools.partial(fn, *args, **kwargs))

    def reply(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload, default=str))

    def int_argument(self, name: str, default: int, low: int, high: int | None = None) -> int:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        digits = raw[1:] if raw[:1] == "-" else raw
        # int() alone would also take " 7", "1_000" and other scripts' digits
        if not (digits.isascii() and digits.isdigit()) or len(digits) > 4000:
            raise UsageError(f"{name} must be a whole number, got {raw[:40]!r}")
        value = int(raw)
        if value < low or (high is not None and value > high):
            upper = f" and at most {high}" if high is not None else ""
            shown = raw if len(raw) <= 40 else raw[:20] + "…"
            raise UsageError(f"{name} must be at least {low}{upper}, got {shown}")
        return value

    def json_body(self) -> dict[str, Any]:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise UsageError("the request body is not JSON") from None
        if not isinstance(body, dict):
            raise UsageError("the request body must be a JSON object")
        return body

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, (ComputeError, tornado.web.HTTPError)):
            self.log.info("jupyter-compute: %s %s: %s", self.request.method, self.request.path,
                          value)
            return
        super().log_exception(typ, value, tb)  # the traceback goes to the server log only

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ComputeError):
            status, error, message = error_status(exc), type(exc).__name__, str(exc)
        elif isinstance(exc, tornado.web.HTTPError):
            status = exc.status_code
            error = exc.reason or httputil.responses.get(status, "Error")
            message = exc.log_message or error
            if exc.args[2:]:
                message = message % exc.args[2:]
        else:
            status, error = 500, "InternalError"
            message = (f"{type(exc).__name__}: {exc}; the server log has the details"
                       if exc is not None else self._reason)
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": error, "message": message}))


# -- what the handlers compute (in the executor) -------------------------------------------


def target_row(ws: Workspace, name: str, config: dict[str, Any]) -> dict[str, Any]:
    """One target as the sidebar shows it: kind, options, status, node counts."""
    options = {k: v for k, v in config.items() if k != "type"}
    row: dict[str, Any] = {"name": name, "kind": config.get("type"), "options": options,
                           "status": "ready", "cluster": False, "nodes": None, "error": None}
    try:
        nodes = node_counts(api.get_target(name, ws))
    except ComputeError as exc:
        row.update(status="unreachable", error=str(exc))
        return row
    except Exception as exc:  # a plugin's bug must not hide the other targets
        row.update(status="error", error=f"{type(exc).__name__}: {exc}")
        return row
    if nodes is not None:
        running = nodes.get("running", True)
        row.update(cluster=True, status="running" if running else "stopped",
                   nodes={k: nodes.get(k) for k in ("current", "min", "max", "pending")})
    return row


def list_targets(ws: Workspace) -> dict[str, Any]:
    found = api.targets(ws)
    futures = [NODES_EXECUTOR.submit(target_row, ws, name, cfg) for name, cfg in found.items()]
    return {"workspace": str(ws.root), "targets": [f.result() for f in futures]}


def one_target(ws: Workspace, name: str) -> dict[str, Any]:
    found = api.targets(ws)
    if name not in found:
        raise NotFound(f"no target named {name!r} (attached: {', '.join(found)})")
    return target_row(ws, name, found[name])


def attach(ws: Workspace, body: dict[str, Any]) -> dict[str, Any]:
    """Attach as ``jupyter-compute attach NAME --type KIND --opt VALUE …`` would."""
    from jupyter_compute.targets import parse_kind_options

    name, kind = body.get("name"), body.get("kind")
    missing = [key for key, value in (("name", name), ("kind", kind))
               if not isinstance(value, str) or not value.strip()]
    if missing:
        raise UsageError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                         "required: attach needs a target name and a kind (e.g. ssh)")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise UsageError("options must be an object of option names and values")
    argv = []  # the CLI's own parser turns them into typed options, flags included
    for key, value in options.items():
        if value is None or value == "" or value is False:
            continue
        argv.append(f"--{key}" if value is True else f"--{key}={value}")
    assert isinstance(name, str) and isinstance(kind, str)
    api.attach(name.strip(), kind.strip(), workspace=ws, replace=bool(body.get("replace")),
               **parse_kind_options(kind.strip(), argv))
    return one_target(ws, name.strip())


def start_stop(ws: Workspace, name: str, action: str) -> dict[str, Any]:
    one_target(ws, name)  # 404 for an unknown name
    target = cluster_of(api.get_target(name, ws))
    target.start() if action == "start" else target.stop()
    return one_target(ws, name)


def detach(ws: Workspace, name: str) -> None:
    one_target(ws, name)
    api.detach(name, ws)


def kinds() -> list[dict[str, Any]]:
    """Every installed kind with its options, for the attach form."""
    from jupyter_compute.targets import installed_kinds, target_class

    found = []
    for kind in installed_kinds():
        try:
            declared = target_class(kind).options
        except Exception:  # a plugin that fails to import is not offered
            continue
        found.append({"kind": kind, "options": [
            {"name": key, "type": typ.__name__, "help": help_}
            for key, (typ, help_) in declared.items()]})
    return found


def metric_and_tags(run: Run) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """What a row shows besides the record: the primary metric (a sweep's best value,
    else the first scalar) and the run's tags; kept once the run has ended."""
    if run.id in _ENDED:
        return _ENDED[run.id]
    try:
        found = (run.primary_metric(), run.tags())
    except ComputeError:
        return None, {}
    if RunStatus(run.record.status).is_terminal():
        if len(_ENDED) > 2000:
            _ENDED.clear()
        _ENDED[run.id] = found
    return found


def run_row(run: Run) -> dict[str, Any]:
    """The ``show --json`` shape, plus the primary metric and the tags; a run whose
    target cannot be reached keeps its last known status and says why."""
    try:
        row = run.to_dict()
        row["unreachable"] = None
    except ComputeError as exc:
        row = run.record.to_dict()
        row["unreachable"] = str(exc)
    row["metric"], row["tags"] = metric_and_tags(run)
    return row


def get_run(ws: Workspace, run_id: str) -> Run:
    if not ws.dir.is_dir():  # never create a workspace just by looking
        raise RunNotFoundError(run_id, f" (no {ws.dir})")
    return Run.get(run_id, ws)


def list_runs(ws: Workspace, limit: int, status: str | None) -> dict[str, Any]:
    if not ws.dir.is_dir():  # a folder without a workspace has no runs; don't make one
        return {"workspace": str(ws.root), "runs": []}
    return {"workspace": str(ws.root),
            "runs": [run_row(run) for run in with_parents(
                ws, api.runs(limit=limit, status=status, workspace=ws))]}


def with_parents(ws: Workspace, runs: list[Run]) -> list[Run]:
    """``runs`` with the parent of each (a trial's sweep) that is not among them, placed
    just before its first child: a sweep older than its newest 50 trials still heads them."""
    from jupyter_compute import runkinds

    listed = {run.id for run in runs}
    found: list[Run] = []
    for run in runs:
        parent_id = run.record.parent_id
        if parent_id and parent_id not in listed:
            listed.add(parent_id)
            try:
                found.append(runkinds.handle(ws.store.get(parent_id), ws))
            except RunNotFoundError:
                pass  # deleted: the child shows on its own
        found.append(run)
    return found


def read_log(ws: Workspace, run_id: str, offset: int) -> dict[str, Any]:
    """Whole lines of the log from ``offset`` (the rest, once the run has ended)."""
    run = get_run(ws, run_id)
    status = run.status()  # before the log: once terminal, the log is final
    data = run.read_log(offset)
    chunk = data[:MAX_LOG_CHUNK]
    whole = status.is_terminal() and len(chunk) == len(data)
    end = len(chunk) if whole else chunk.rfind(b"\n") + 1
    if end == 0 and len(chunk) == MAX_LOG_CHUNK:  # one line longer than a chunk
        end = len(chunk)
    return {"run_id": run.id, "offset": offset, "next_offset": offset + end,
            "text": chunk[:end].decode(errors="replace"), "status": status.value,
            "done": whole}


def read_metrics(ws: Workspace, run_id: str, offset: int | None) -> dict[str, Any]:
    run = get_run(ws, run_id)
    if offset is None:
        return {"run_id": run.id, "metrics": run.metrics()}
    records, next_offset = run.read_metrics(offset)
    # A multi-node run's page charts rank 0, as the widget does by default.
    records = [r for r in records if not r.get("rank")]
    return {"run_id": run.id, "offset": offset, "next_offset": next_offset,
            "records": records}


def cancel(ws: Workspace, run_id: str) -> dict[str, Any]:
    """Cancel as ``jupyter-compute cancel`` does: ask, then wait out the grace period."""
    run = get_run(ws, run_id)
    if not run.cancel().is_terminal():
        grace = float((run.record.spec or {}).get("cancel_grace_seconds", 3))
        run.wait(timeout=grace + 5)
    return run_row(run)


def notebook_html(ws: Workspace, run_id: str, theme: str) -> dict[str, Any]:
    """A notebook run's executed notebook (``outputs/<name>.ipynb``) rendered to HTML."""
    run = get_run(ws, run_id)
    if run.record.kind != "notebook":
        raise UsageError(f"run {run.id} is a {run.record.kind} run; only notebook runs have "
                         "an executed notebook")
    name = Path(run.record.script).name
    files = run.outputs()
    found = [p for p in files if p.name == name] or [p for p in files if p.suffix == ".ipynb"]
    if not found:
        raise NotFound(f"run {run.id} has not written {name} yet; it appears in outputs/ once "
                       "its first cell has run")
    return {"run_id": run.id, "name": name, "status": run.status().value,
            "html": render_notebook(found[0], theme)}


def render_notebook(path: Path, theme: str) -> str:
    """``path`` (an .ipynb) as a standalone read-only HTML page (nbconvert's lab template)."""
    import nbformat
    from nbconvert import HTMLExporter

    try:
        notebook = nbformat.read(path, as_version=4)
    except Exception as exc:  # a notebook still being written, or not a notebook at all
        raise UsageError(f"{path.name} cannot be read as a notebook ({exc}); download it "
                         "instead") from None
    html, _ = HTMLExporter(template_name="lab", theme=theme).from_notebook_node(notebook)
    return str(html)


def run_detail(ws: Workspace, run_id: str, with_outputs: bool = True) -> dict[str, Any]:
    """What the run page shows and polls while the run goes on (metrics, the log and
    the snapshot's files, which never change, come apart)."""
    run = get_run(ws, run_id)
    row = run_row(run)
    parent = None
    if run.record.parent_id:
        try:
            found = ws.store.get(run.record.parent_id)
            parent = {"id": found.id, "name": found.name, "kind": found.kind}
        except RunNotFoundError:
            parent = None
    row.update(
        parent=parent, params=runinfo.params(run),
        outputs=list_outputs(run) if with_outputs else None)
    if isinstance(row.get("steps"), list):  # a pipeline: its steps' graph, drawn once here
        from jupyter_compute.svgdag import dag_svg

        row["steps_svg"] = dag_svg(row["steps"])
    return row


def snapshot_files(ws: Workspace, run_id: str) -> dict[str, Any]:
    run = get_run(ws, run_id)
    files = runinfo.snapshot_files(run)
    return {"run_id": run.id, "total": len(files),
            "files": [{"path": p, "size": n} for p, n in files[:MAX_SNAPSHOT_FILES]]}


def list_outputs(run: Run) -> list[dict[str, Any]]:
    try:
        return [{"path": p, "size": n} for p, n in runinfo.outputs(run)]
    except ComputeError:  # an unreachable host: the page still shows the rest
        return []


def outputs(ws: Workspace, run_id: str) -> dict[str, Any]:
    run = get_run(ws, run_id)
    return {"run_id": run.id, "outputs": [{"path": p, "size": n}
                                          for p, n in runinfo.outputs(run)]}


def output_file(ws: Workspace, run_id: str, rel: str) -> Path:
    return runinfo.output_path(get_run(ws, run_id), rel)


def output_notebook(ws: Workspace, run_id: str, rel: str, theme: str) -> dict[str, Any]:
    path = output_file(ws, run_id, rel)
    if path.suffix != ".ipynb":
        raise UsageError(f"{rel} is not a notebook (.ipynb); download it to open it")
    return {"run_id": run_id, "path": rel, "html": render_notebook(path, theme)}


def content_disposition(name: str) -> str:
    """``attachment`` with the file's name, in ASCII and (RFC 6266) UTF-8."""
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                         for c in name)
    return (f'attachment; filename="{ascii_name}"; '
            f"filename*=UTF-8''{urllib.parse.quote(name, safe='')}")


# -- handlers --------------------------------------------------------------------------------


class TargetsHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.reply(await self.blocking(list_targets, self.compute.resolve()))

    @tornado.web.authenticated
    async def post(self) -> None:
        body = self.json_body()
        self.reply(await self.blocking(attach, self.compute.resolve(), body), 201)


class TargetHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self, name: str) -> None:
        self.reply(await self.blocking(one_target, self.compute.resolve(), name))

    @tornado.web.authenticated
    async def delete(self, name: str) -> None:
        await self.blocking(detach, self.compute.resolve(), name)
        self.set_status(204)
        self.finish()


class TargetActionHandler(ComputeHandler):
    @tornado.web.authenticated
    async def post(self, name: str, action: str) -> None:
        self.reply(await self.blocking(start_stop, self.compute.resolve(), name, action))


class KindsHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        self.reply({"kinds": await self.blocking(kinds)})


class RunsHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        limit = self.int_argument("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        status = self.get_query_argument("status", None) or None
        if status is not None and status not in _STATUSES:
            raise UsageError(f"unknown status {status!r}; use one of {', '.join(_STATUSES)}")
        self.reply(await self.blocking(list_runs, self.compute.resolve(), limit, status))


class RunHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        ws = self.compute.resolve()
        self.reply(await self.blocking(lambda: run_row(get_run(ws, run_id))))


class LogHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        offset = self.int_argument("offset", 0, 0, MAX_OFFSET)
        self.reply(await self.blocking(read_log, self.compute.resolve(), run_id, offset))


class MetricsHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        given = self.get_query_argument("offset", None) not in (None, "")
        offset = self.int_argument("offset", 0, 0, MAX_OFFSET) if given else None
        self.reply(await self.blocking(read_metrics, self.compute.resolve(), run_id, offset))


class CancelHandler(ComputeHandler):
    @tornado.web.authenticated
    async def post(self, run_id: str) -> None:
        self.reply(await self.blocking(cancel, self.compute.resolve(), run_id))


class NotebookHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        theme = "dark" if self.get_query_argument("theme", "light") == "dark" else "light"
        self.reply(await self.blocking(notebook_html, self.compute.resolve(), run_id, theme))


class DetailHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        with_outputs = self.get_query_argument("outputs", "1") != "0"
        self.reply(await self.blocking(run_detail, self.compute.resolve(), run_id,
                                       with_outputs))


class SnapshotHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        self.reply(await self.blocking(snapshot_files, self.compute.resolve(), run_id))


class OutputsHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        self.reply(await self.blocking(outputs, self.compute.resolve(), run_id))


class OutputFileHandler(ComputeHandler):
    """One output's bytes, streamed in chunks; always an attachment, never rendered at
    the server's origin (a run's HTML output must not run as this page)."""

    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        rel = self.get_query_argument("path", "")
        path = await self.blocking(output_file, self.compute.resolve(), run_id, rel)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        with open(path, "rb") as f:
            left = os.fstat(f.fileno()).st_size  # a file still growing is sent as it was
            self.set_header("Content-Type", mime)
            self.set_header("Content-Length", str(left))
            self.set_header("Content-Disposition", content_disposition(path.name))
            self.set_header("X-Content-Type-Options", "nosniff")
            self.set_header("Content-Security-Policy", "sandbox")
            self.set_header("Cache-Control", "no-store")
            while left > 0 and (chunk := await self.blocking(f.read, min(left, OUTPUT_CHUNK))):
                left -= len(chunk)
                self.write(chunk)
                await self.flush()
        await self.finish(set_content_type=mime)


class OutputNotebookHandler(ComputeHandler):
    @tornado.web.authenticated
    async def get(self, run_id: str) -> None:
        rel = self.get_query_argument("path", "")
        theme = "dark" if self.get_query_argument("theme", "light") == "dark" else "light"
        self.reply(await self.blocking(output_notebook, self.compute.resolve(), run_id, rel,
                                       theme))


def setup_handlers(serverapp: Any) -> None:
    """Register the handlers on the server's web app (called when the extension loads)."""
    settings = serverapp.web_app.settings
    settings["jupyter_compute"] = JupyterCompute(root_dir=str(serverapp.root_dir),
                                                 parent=serverapp)
    base = url_path_join(settings["base_url"], "jupyter-compute", "api")
    name, run = r"(?P<name>[^/]+)", r"(?P<run_id>[^/]+)"
    routes: list[tuple[str, type[ComputeHandler]]] = [
        ("targets", TargetsHandler),
        (f"targets/{name}", TargetHandler),
        (f"targets/{name}/(?P<action>start|stop)", TargetActionHandler),
        ("kinds", KindsHandler),
        ("runs", RunsHandler),
        (f"runs/{run}", RunHandler),
        (f"runs/{run}/log", LogHandler),
        (f"runs/{run}/metrics", MetricsHandler),
        (f"runs/{run}/cancel", CancelHandler),
        (f"runs/{run}/notebook", NotebookHandler),
        (f"runs/{run}/detail", DetailHandler),
        (f"runs/{run}/snapshot", SnapshotHandler),
        (f"runs/{run}/outputs", OutputsHandler),
        (f"runs/{run}/outputs/file", OutputFileHandler),
        (f"runs/{run}/outputs/notebook", OutputNotebookHandler),
    ]
    serverapp.web_app.add_handlers(".*$", [(url_path_join(base, path), handler)
                                           for path, handler in routes])
    serverapp.log.info("jupyter-compute: serving the Compute sidebar's API at %s", base)
