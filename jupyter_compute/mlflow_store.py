"""MLflow's tracking store for ``jupyter-compute://`` URIs: the script's ``mlflow``
client records into the run in its own process, without an HTTP round trip per call.

MLflow finds this class by the URI's scheme through the ``mlflow.tracking_store``
entry point, which the agent writes for each run (:func:`write_entry_point`, a tiny
``*.dist-info`` on the script's ``PYTHONPATH``). Only ``mlflow`` imports this module,
inside the script, so it may import ``mlflow``.

It is MLflow's own :class:`RestStore` with the transport replaced: every call it would
send to ``/api/2.0/mlflow/…`` is answered by the same :class:`Recorder` the agent's
REST endpoint uses, so both record the same way, and a call not served raises the same
``ENDPOINT_NOT_FOUND`` error naming it. ``log_metric``, ``log_batch``, ``log_param`` and
``set_tag`` (the calls a training loop makes) skip the protobuf and JSON round trip.

The URI's host and port are the run's REST endpoint (``jupyter-compute://127.0.0.1:PORT``
is ``http://127.0.0.1:PORT`` for anything that speaks HTTP); calls ``RestStore`` makes
without ``_call_endpoint`` go there. Each process keeps its own view of the child runs
it starts, as each has its own store.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ENDPOINT_NOT_FOUND, ErrorCode
from mlflow.store.tracking.rest_store import RestStore
from mlflow.utils.proto_json_utils import parse_dict
from mlflow.utils.rest_utils import MlflowHostCreds

from jupyter_compute import protocol
from jupyter_compute.mlflow_endpoint import API, ENV_RUN_NAME, MlflowRequestError, Recorder

_PREFIX = API.rstrip("/")


def _say(message: str) -> None:
    # One write with its newline: print() writes the end apart, and the script's stdout,
    # pumped into the same log from another pipe, could land between the two.
    sys.stderr.write(f"[jupyter_compute] {message}\n")
    sys.stderr.flush()


class JupyterComputeStore(RestStore):
    """``jupyter-compute://127.0.0.1:PORT``: the current run's MLflow tracking store."""

    def __init__(self, store_uri: str, artifact_uri: str | None = None) -> None:
        http = MlflowHostCreds("http://" + urlsplit(store_uri).netloc,
                               token=os.environ.get("MLFLOW_TRACKING_TOKEN"))
        super().__init__(lambda: http)
        run_id = os.environ.get(protocol.ENV_RUN_ID)
        run_dir = os.environ.get(protocol.ENV_RUN_DIR)
        if not run_id or not run_dir:
            raise MlflowException(f"{store_uri} records into a jupyter_compute run and works "
                                  "only inside one; set MLFLOW_TRACKING_URI to your own server")
        self.recorder = Recorder(run_dir, run_id, os.environ.get(ENV_RUN_NAME) or run_id,
                                 say=_say)

    def _call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.recorder.handle(method, path, body)
        except LookupError:
            raise MlflowException(self.recorder.not_served(method, API + path),
                                  error_code=ENDPOINT_NOT_FOUND) from None
        except MlflowRequestError as exc:
            raise MlflowException(str(exc), error_code=ErrorCode.Value(exc.code)) from None

    def _call_endpoint(self, api: Any, json_body: str | None = None, endpoint: str | None = None,
                       retry_timeout_seconds: Any = None, response_proto: Any = None) -> Any:
        path, method = self._METHOD_TO_INFO.get(api, (None, "POST"))
        path = endpoint or path or f"{_PREFIX}/{api.__name__}"
        if not path.startswith(API):  # e.g. MLflow 3's /api/3.0/…: not served here
            raise MlflowException(self.recorder.not_served(method, path),
                                  error_code=ENDPOINT_NOT_FOUND)
        body = json.loads(json_body) if json_body else {}
        reply = self._call(method, path[len(API):], body)
        response_proto = response_proto or api.Response()
        parse_dict(js_dict=reply, message=response_proto)
        return response_proto

    # -- the calls of a training loop, without protobuf and JSON ------------------------

    def log_metric(self, run_id: str, metric: Metric) -> None:
        self._call("POST", "runs/log-metric", {
            "run_id": run_id, "key": metric.key, "value": metric.value,
            "timestamp": metric.timestamp, "step": metric.step})

    def log_param(self, run_id: str, param: Param) -> None:
        self._call("POST", "runs/log-parameter",
                   {"run_id": run_id, "key": param.key, "value": param.value})

    def set_tag(self, run_id: str, tag: RunTag) -> None:
        self._call("POST", "runs/set-tag", {"run_id": run_id, "key": tag.key, "value": tag.value})

    def log_batch(self, run_id: str, metrics: list[Metric], params: list[Param],
                  tags: list[RunTag]) -> None:
        self._call("POST", "runs/log-batch", {
            "run_id": run_id,
            "metrics": [{"key": m.key, "value": m.value, "timestamp": m.timestamp,
                         "step": m.step} for m in metrics],
            "params": [{"key": p.key, "value": p.value} for p in params],
            "tags": [{"key": t.key, "value": t.value} for t in tags]})
