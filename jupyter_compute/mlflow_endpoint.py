"""MLflow inside every run, so a script that logs with ``mlflow`` records into the run
without a change.

One rule: unless the script's environment sets its own ``MLFLOW_TRACKING_URI`` (which
it keeps), the agent (:func:`serve`) starts the run's REST :class:`Endpoint` on
127.0.0.1 (an ephemeral port) and gives the script
``MLFLOW_TRACKING_URI=jupyter-compute://127.0.0.1:PORT``, with ``MLFLOW_RUN_ID``,
``MLFLOW_EXPERIMENT_ID`` and ``MLFLOW_TRACKING_TOKEN`` (a random bearer token, so
another user of a shared host cannot write into the run through the port).

* The Python ``mlflow`` client resolves the ``jupyter-compute`` scheme to
  ``mlflow_store.JupyterComputeStore`` through an ``mlflow.tracking_store`` entry point
  (a dist-info the agent writes in the run folder and puts on ``PYTHONPATH``). That
  store records in the script's own process: a ``log_metric`` costs a file append, not
  an HTTP round trip (~30 µs a call against 2.7 ms over HTTP under load; see
  benchmarks/bench_tracking.py).
* Anything else that speaks MLflow's REST API (another language, ``curl``) uses the same
  address over HTTP, ``http://127.0.0.1:PORT/api/2.0/mlflow/…``, with the token.

Why always the store and the endpoint both: the agent cannot know which Python, or
which client, the script will use, and the store costs nothing when unused; a single
URI scheme keeps what a script sees the same on every target. Both answer through one
:class:`Recorder`, the mapping of MLflow's calls to the run folder, so they record the
same way; each process (the agent, the script, a subprocess of it) has its own, so a
child run started in one is not known in another.

=====================================  ===========================================
the script calls                       lands in the run folder as
=====================================  ===========================================
``log_param(s)``, log-batch params     ``metrics.jsonl`` records of kind ``param``
``log_metric(s)`` (step, timestamp)    ``metrics.jsonl`` scalars: live in the widget
``set_tag(s)``                         ``metrics.jsonl`` records of kind ``tag``
``log_artifact(s)``, ``log_dict``, …   files in ``outputs/`` (see below)
``start_run(nested=True)``, a 2nd run  a child run: its records carry ``NAME/``
=====================================  ===========================================

Artifacts never pass through here: a run's ``artifact_uri`` is the ``file://`` URI of
the run's ``outputs/`` (the script runs on the same host as this endpoint), so the
client copies files there itself; a child run's go to ``outputs/NAME/``, a logged
model's to ``outputs/models/ID/``. MLflow's own tags (``mlflow.user``,
``mlflow.source.name`` …) are answered back to the client but not recorded.

Any name given to ``set_experiment`` resolves to the run's one experiment, so a
script that picks its experiment still runs inside this run. A call not served
here answers MLflow's error format at once (``ENDPOINT_NOT_FOUND``, naming the method
and path; 404 over HTTP), so the client raises a clear error; the run's log says it too.

Standard library only: this file travels to every target with ``agent.py``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time

from jupyter_compute import protocol

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: The one experiment of a run: every experiment name the script asks for resolves to it.
EXPERIMENT_ID = "0"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
#: The run's name, the MLflow ``runName`` of its run in the script's store.
ENV_RUN_NAME = "JUPYTER_COMPUTE_RUN_NAME"
#: The URI scheme of the in-process store (``mlflow_store.JupyterComputeStore``).
STORE_SCHEME = "jupyter-compute"
#: The dist-info that makes MLflow find that store: its entry point.
_DIST_INFO = "jupyter_compute_mlflow_store-1.dist-info"
API = "/api/2.0/mlflow/"
_MODEL_PATH = re.compile(r"^logged-models/([\w-]+)(/tags)?$")


def _ms() -> int:
    return int(time.time() * 1000)


def _kv(items: Any) -> list[tuple[str, str]]:
    """``[{"key": k, "value": v}, …]`` as pairs (MLflow's params and tags)."""
    return [(str(i["key"]), str(i.get("value", ""))) for i in items or () if "key" in i]


class MlflowRequestError(Exception):
    """A request the endpoint answers with MLflow's error JSON."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class RunState:
    """What MLflow knows of one run (the run itself, or a child run of it)."""

    def __init__(self, run_id: str, name: str, artifact_dir: str, prefix: str,
                 start_time: int, tags: dict[str, str]) -> None:
        self.run_id, self.name, self.prefix = run_id, name, prefix
        self.artifact_uri = "file://" + artifact_dir
        self.status = "RUNNING"
        self.start_time: int = start_time
        self.end_time: int | None = None
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {"mlflow.runName": name, **tags}
        self.metrics: dict[str, list[dict[str, Any]]] = {}

    def info(self) -> dict[str, Any]:
        info = {"run_id": self.run_id, "run_uuid": self.run_id, "run_name": self.name,
                "experiment_id": EXPERIMENT_ID, "user_id": os.environ.get("USER", ""),
                "status": self.status, "start_time": self.start_time,
                "artifact_uri": self.artifact_uri, "lifecycle_stage": "active"}
        if self.end_time is not None:
            info["end_time"] = self.end_time
        return info

    def to_json(self) -> dict[str, Any]:
        return {"info": self.info(), "data": {
            "metrics": [history[-1] for history in self.metrics.values()],
            "params": [{"key": k, "value": v} for k, v in self.params.items()],
            "tags": [{"key": k, "value": v} for k, v in self.tags.items()]},
            "inputs": {}}


class Recorder:
    """MLflow's tracking calls as records of one run folder: the one mapping, called by
    the REST :class:`Endpoint` (in the agent) and by the in-process store
    (``mlflow_store.py``, in the script). Each call is ``handle(method, path, body)``
    with the REST API's method, path (after ``/api/2.0/mlflow/``) and JSON body::

        recorder = Recorder("/runs/20261126-0931-train-7f3a", "20261126-0931-train-7f3a", "train")
        recorder.handle("POST", "runs/log-metric", {"run_id": …, "key": "loss", "value": 0.5})
    """

    def __init__(self, run_dir: str, run_id: str, run_name: str,
                 say: Callable[[str], None] | None = None) -> None:
        self.run_dir = run_dir
        self.say = say or (lambda _message: None)
        self.outputs = os.path.join(run_dir, protocol.OUTPUTS)
        self.run_id = run_id
        self.runs = {run_id: RunState(run_id, run_name, self.outputs, "", _ms(), {})}
        self.experiment_name = "Default"
        self.models: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._unserved: set[str] = set()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def not_served(self, method: str, path: str) -> str:
        """The error message for a call not served here; said once in the run's log."""
        message = f"jupyter_compute does not serve {method} {path}"
        if message not in self._unserved:
            self._unserved.add(message)
            self.say(f"mlflow: {message}")
        return message

    # -- recording ---------------------------------------------------------------------

    def _write(self, lines: list[str]) -> None:
        if not lines:
            return
        if self._fd is None:
            self._fd = os.open(os.path.join(self.run_dir, protocol.METRICS),
                               os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # One write with O_APPEND: the script's own tracking records never interleave.
        os.write(self._fd, "".join(lines).encode())

    def _run(self, body: dict[str, Any]) -> RunState:
        run_id = str(body.get("run_id") or body.get("run_uuid") or "")
        run = self.runs.get(run_id)
        if run is None:
            raise MlflowRequestError(404, "RESOURCE_DOES_NOT_EXIST",
                                     f"Run '{run_id}' not found in this jupyter_compute run")
        return run

    def log(self, run: RunState, metrics: list[dict[str, Any]] = (),  # type: ignore[assignment]
            params: list[tuple[str, str]] = (),  # type: ignore[assignment]
            tags: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        lines = []
        for key, value in params:
            run.params[key] = value
            lines.append(protocol.metric_record(run.prefix + key, value, None, "param"))
        for m in metrics:
            key, number = str(m["key"]), float(m.get("value", 0.0))
            step, stamp = int(m.get("step") or 0), int(m.get("timestamp") or _ms())
            run.metrics.setdefault(key, []).append(
                {"key": key, "value": number, "timestamp": stamp, "step": step})
            lines.append(protocol.metric_record(run.prefix + key, number, step, "scalar",
                                                time=stamp / 1000))
        for key, value in tags:
            run.tags[key] = value
            if not key.startswith("mlflow."):  # MLflow's own bookkeeping stays here
                lines.append(protocol.metric_record(run.prefix + key, value, None, "tag"))
        self._write(lines)

    # -- the API -----------------------------------------------------------------------

    def handle(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer one call: ``path`` is what follows ``/api/2.0/mlflow/``."""
        route = _ROUTES.get((method, path))
        if route is not None:
            with self._lock:
                return route(self, body)
        model = _MODEL_PATH.match(path)
        if model is not None and method in ("GET", "PATCH"):
            with self._lock:
                return self.logged_model(model.group(1), method, body, bool(model.group(2)))
        raise LookupError

    def get_run(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"run": self._run(body).to_json()}

    def create_run(self, body: dict[str, Any]) -> dict[str, Any]:
        """A run the script starts beside the current one: a child run of it."""
        tags = dict(_kv(body.get("tags")))
        name = str(body.get("run_name") or tags.get("mlflow.runName") or
                   f"child-{len(self.runs)}")
        taken = {r.name for r in self.runs.values()}
        base, n = name, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        tags.setdefault("mlflow.parentRunId", self.run_id)
        run = RunState(os.urandom(16).hex(), name, os.path.join(self.outputs, _safe(name)),
                       f"{name}/", int(body.get("start_time") or _ms()), {})
        self.runs[run.run_id] = run
        self.log(run, tags=[("mlflow.runName", name), *tags.items()])
        return {"run": run.to_json()}

    def update_run(self, body: dict[str, Any]) -> dict[str, Any]:
        run = self._run(body)
        if body.get("status"):
            run.status = str(body["status"])
            run.end_time = int(body.get("end_time") or _ms()) if run.status != "RUNNING" \
                else None
        return {"run_info": run.info()}

    def log_metric(self, body: dict[str, Any]) -> dict[str, Any]:
        self.log(self._run(body), metrics=[body])
        return {}

    def log_param(self, body: dict[str, Any]) -> dict[str, Any]:
        self.log(self._run(body), params=_kv([body]))
        return {}

    def set_tag(self, body: dict[str, Any]) -> dict[str, Any]:
        self.log(self._run(body), tags=_kv([body]))
        return {}

    def delete_tag(self, body: dict[str, Any]) -> dict[str, Any]:
        self._run(body).tags.pop(str(body.get("key")), None)
        return {}

    def log_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        self.log(self._run(body), metrics=list(body.get("metrics") or ()),
                 params=_kv(body.get("params")), tags=_kv(body.get("tags")))
        return {}

    def accept(self, body: dict[str, Any]) -> dict[str, Any]:
        """Calls that describe a run (its input datasets, model metadata, outputs) and
        have no place in the run folder: answered, not recorded."""
        self._run(body)
        return {}

    def search_runs(self, body: dict[str, Any]) -> dict[str, Any]:
        if (body.get("filter") or "").strip():
            raise MlflowRequestError(400, "INVALID_PARAMETER_VALUE",
                                     "jupyter_compute's MLflow endpoint lists runs but does "
                                     f"not filter them (filter {body['filter']!r})")
        return {"runs": [run.to_json() for run in self.runs.values()]}

    def metric_history(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"metrics": self._run(body).metrics.get(str(body.get("metric_key")), [])}

    def experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        """Any experiment the script names is this run's one experiment (see the module
        docstring); the name it used is kept."""
        name = body.get("experiment_name") or body.get("name")
        if name:
            self.experiment_name = str(name)
        return {"experiment": {"experiment_id": EXPERIMENT_ID, "name": self.experiment_name,
                               "artifact_location": "file://" + self.outputs,
                               "lifecycle_stage": "active"}}

    def create_experiment(self, body: dict[str, Any]) -> dict[str, Any]:
        self.experiment(body)
        return {"experiment_id": EXPERIMENT_ID}

    def search_experiments(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"experiments": [self.experiment({})["experiment"]]}

    def create_logged_model(self, body: dict[str, Any]) -> dict[str, Any]:
        """A model ``log_model`` (and autolog) saves: its files go to outputs/models/ID/."""
        model_id = f"m-{os.urandom(16).hex()}"
        now = _ms()
        model = {"info": {
            "model_id": model_id, "experiment_id": EXPERIMENT_ID,
            "name": str(body.get("name") or "model"),
            "artifact_uri": "file://" + os.path.join(self.outputs, "models", model_id),
            "creation_timestamp_ms": now, "last_updated_timestamp_ms": now,
            "status": "LOGGED_MODEL_PENDING", "lifecycle_stage": "active",
            "source_run_id": body.get("source_run_id") or self.run_id,
            "model_type": body.get("model_type") or "",
            "tags": list(body.get("tags") or ()), "params": list(body.get("params") or ())},
            "data": {}}
        self.models[model_id] = model
        return {"model": model}

    def logged_model(self, model_id: str, method: str, body: dict[str, Any],
                     tags: bool) -> dict[str, Any]:
        model = self.models.get(model_id)
        if model is None:
            raise MlflowRequestError(404, "RESOURCE_DOES_NOT_EXIST",
                                     f"Logged model '{model_id}' not found")
        if method == "PATCH" and tags:
            model["info"]["tags"] = list(model["info"]["tags"]) + list(body.get("tags") or ())
        elif method == "PATCH" and body.get("status"):
            model["info"]["status"] = body["status"]
            model["info"]["last_updated_timestamp_ms"] = _ms()
        return {"model": model}


def write_entry_point(folder: str) -> str:
    """Write, in ``folder``, the dist-info whose ``mlflow.tracking_store`` entry point
    maps ``jupyter-compute://`` to our store; return ``folder``, to put on
    ``PYTHONPATH`` (``importlib.metadata`` reads dist-infos in any ``sys.path`` folder)."""
    dist = os.path.join(folder, _DIST_INFO)
    os.makedirs(dist, 0o755, exist_ok=True)
    for name, text in (
            ("METADATA", "Metadata-Version: 2.1\nName: jupyter_compute_mlflow_store\n"
                         "Version: 1\n"),
            ("entry_points.txt", f"[mlflow.tracking_store]\n{STORE_SCHEME} = "
                                 "jupyter_compute.mlflow_store:JupyterComputeStore\n")):
        with open(os.path.join(dist, name), "w") as f:
            f.write(text)
    return folder


def serve(run_dir: str, run_id: str, run_name: str, env: dict[str, str],
          say: Callable[[str], None]) -> tuple[Endpoint, dict[str, str]]:
    """Start the run's REST endpoint; return it and the variables that point the
    script's ``mlflow`` at the run (``env``: the script's environment, which sets no
    tracking URI of its own). See the module docstring for the rule."""
    endpoint = Endpoint(Recorder(run_dir, run_id, run_name, say))
    port = endpoint.start()
    uri = f"{STORE_SCHEME}://127.0.0.1:{port}"
    found = write_entry_point(os.path.join(run_dir, ".mlflow-store"))
    return endpoint, {
        ENV_TRACKING_URI: uri, "MLFLOW_TRACKING_TOKEN": endpoint.token,
        "MLFLOW_RUN_ID": run_id, "MLFLOW_EXPERIMENT_ID": EXPERIMENT_ID, ENV_RUN_NAME: run_name,
        # what MLflow would use anyway; given, so it does not look for a Spark session
        # (a failed import, ~250 µs) on every call
        "MLFLOW_REGISTRY_URI": env.get("MLFLOW_REGISTRY_URI") or uri,
        # its "View run at" links would lead to a UI nobody serves
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        "PYTHONPATH": os.pathsep.join(filter(None, [found, env.get("PYTHONPATH")])),
        # a host's HTTP(S)_PROXY must not carry loopback calls away
        **{name: ",".join(filter(None, [env.get(name), "127.0.0.1"]))
           for name in ("no_proxy", "NO_PROXY")}}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".") or "run"


_ROUTES: dict[tuple[str, str], Callable[[Recorder, dict[str, Any]], dict[str, Any]]] = {
    ("GET", "runs/get"): Recorder.get_run,
    ("POST", "runs/create"): Recorder.create_run,
    ("POST", "runs/update"): Recorder.update_run,
    ("POST", "runs/log-metric"): Recorder.log_metric,
    ("POST", "runs/log-parameter"): Recorder.log_param,
    ("POST", "runs/set-tag"): Recorder.set_tag,
    ("POST", "runs/delete-tag"): Recorder.delete_tag,
    ("POST", "runs/log-batch"): Recorder.log_batch,
    ("POST", "runs/log-inputs"): Recorder.accept,
    ("POST", "runs/log-model"): Recorder.accept,
    ("POST", "runs/outputs"): Recorder.accept,
    ("POST", "runs/search"): Recorder.search_runs,
    ("GET", "metrics/get-history"): Recorder.metric_history,
    ("GET", "experiments/get-by-name"): Recorder.experiment,
    ("GET", "experiments/get"): Recorder.experiment,
    ("POST", "experiments/create"): Recorder.create_experiment,
    ("POST", "experiments/search"): Recorder.search_experiments,
    ("POST", "experiments/set-experiment-tag"): lambda _self, _body: {},
    ("POST", "logged-models"): Recorder.create_logged_model,
}



class Endpoint:
    """The MLflow REST endpoint of one run, for anything that talks HTTP::

        endpoint = Endpoint(Recorder(run_dir, run_id, "train", say=say))
        port = endpoint.start()          # listening now; endpoint.token for the script
        …                                # the script runs
        endpoint.stop()
    """

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.token = os.urandom(18).hex()
        self._socket: socket.socket | None = None
        self._server: Any = None  # an http.server.ThreadingHTTPServer, from the first call
        self._lock = threading.Lock()

    def start(self) -> int:
        """Listen on 127.0.0.1 (the port is the script's from its start) and serve in a
        thread; return the port. ``http.server`` is imported at the first call: it cost
        a third of the agent's start (~30 ms of CPU), and most scripts never call."""
        self._socket = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._serve, name="mlflow-endpoint", daemon=True).start()
        return int(self._socket.getsockname()[1])

    def _serve(self) -> None:
        assert self._socket is not None
        try:
            first = self._socket.accept()
        except OSError:
            return  # stopped before anyone called
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(_Answering, BaseHTTPRequestHandler):
            served = self

        with self._lock:
            if self._socket.fileno() < 0:
                first[0].close()
                return
            server = ThreadingHTTPServer(self._socket.getsockname(), Handler,
                                         bind_and_activate=False)
            server.socket.close()
            server.socket = self._socket  # the one the port was given for
            server.daemon_threads = True
            self._server = server
        server.process_request(*first)
        server.serve_forever(poll_interval=0.05)

    def stop(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            if server is None and self._socket is not None:
                try:  # wakes the accept() of a server that never had a call
                    self._socket.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                self._socket.close()
        if server is not None:
            server.shutdown()
            server.server_close()
        self.recorder.close()


class _Answering:
    """The request handler's own part (``http.server.BaseHTTPRequestHandler`` is the
    other, joined at the first call): HTTP/1.1 with keep-alive and Nagle off, so each
    call is one loopback round trip."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    served: Endpoint
    path: str
    headers: Any
    rfile: Any
    wfile: Any
    send_response: Callable[..., None]
    send_header: Callable[..., None]
    end_headers: Callable[[], None]

    def do_GET(self) -> None:
        self._answer("GET")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_PATCH(self) -> None:
        self._answer("PATCH")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        from hmac import compare_digest  # here, not at the agent's start (~10 ms)
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, reply = 200, b"{}"
        try:
            if not compare_digest(self.headers.get("Authorization") or "",
                                  f"Bearer {self.served.token}"):
                raise MlflowRequestError(401, "UNAUTHENTICATED",
                                         "this run's MLflow endpoint needs its token "
                                         "(MLFLOW_TRACKING_TOKEN, set for the script)")
            if not url.path.startswith(API):
                raise LookupError
            if method == "GET":
                body: Any = {k: v[0] for k, v in parse_qs(url.query).items()}
            else:
                body = json.loads(raw or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the request body is not a JSON object")
            answer = self.served.recorder.handle(method, url.path[len(API):], body)
            reply = json.dumps(answer).encode()
        except LookupError:
            status, reply = 404, self._not_served(method, url.path)
        except MlflowRequestError as exc:
            status, reply = exc.status, _error(exc.code, str(exc))
        except (ValueError, TypeError, KeyError) as exc:
            status, reply = 400, _error("INVALID_PARAMETER_VALUE", f"bad request: {exc}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def _not_served(self, method: str, path: str) -> bytes:
        return _error("ENDPOINT_NOT_FOUND", self.served.recorder.not_served(method, path))

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # a line per call would flood the run's log


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error_code": code, "message": message}).encode()
