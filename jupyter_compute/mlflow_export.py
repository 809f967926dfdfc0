"""Export runs into any MLflow tracking server, through the ``mlflow`` client.

::

    from jupyter_compute import Run, mlflow_export

    for done in mlflow_export.export([Run.get("7f3a")], "http://127.0.0.1:5000"):
        print(done.run_id, "->", done.mlflow_run_id, "updated" if done.updated else "new")

Each run becomes one MLflow run in the experiment (default ``jupyter_compute``):
its params (notebook/sweep parameters and those it logged), its scalar metrics with
their steps and times, its tags and ours (``jupyter_compute.run_id``, target,
snapshot id, status, duration; git commit, branch and dirty), and its ``outputs/`` as
artifacts. A sweep becomes a parent run with its trials as child runs
(``mlflow.parentRunId``).

Exporting again updates the same MLflow run, found by its ``jupyter_compute.run_id``
tag: metric points already there are not sent twice. Needs ``mlflow-skinny``
(``pip install 'jupyter_compute[mlflow]'``).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from datetime import datetime

from jupyter_compute.exceptions import ComputeError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Any

    from jupyter_compute.runs import Run

#: The tag that finds a run's MLflow run again, so a second export updates it.
RUN_ID_TAG = "jupyter_compute.run_id"
DEFAULT_EXPERIMENT = "jupyter_compute"
#: MLflow's limits for one log-batch call.
_BATCH_METRICS, _BATCH_PARAMS, _BATCH_TAGS = 1000, 100, 100
_STATUS = {"Completed": "FINISHED", "Failed": "FAILED", "Canceled": "KILLED",
           "TimedOut": "KILLED"}


@dataclass
class Exported:
    """One run exported: our id, the MLflow run's id, and whether it was there already."""

    run_id: str
    mlflow_run_id: str
    updated: bool


class ExportError(ComputeError):
    """The MLflow server could not be reached, or refused what was sent."""


def export(runs: Sequence[Run], uri: str, experiment: str | None = None) -> Iterator[Exported]:
    """Export ``runs`` (a sweep with its trials) to the MLflow server at ``uri``.

    Yields each run as it is done. Raises ``ExportError`` with one line when the
    server cannot be reached or refuses a call.
    """
    with _quick_failure():
        client = _client(uri)
        try:
            experiment_id = _experiment_id(client, experiment or DEFAULT_EXPERIMENT)
            known = _exported_before(client, experiment_id)
            for run in runs:
                parent = _export_run(client, experiment_id, run, None, known.get(run.id))
                yield parent
                for trial in _trials(run):
                    yield _export_run(client, experiment_id, trial, parent.mlflow_run_id,
                                      known.get(trial.id))
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - MlflowException, requests' errors
            raise ExportError(_why(exc, uri)) from None


@contextlib.contextmanager
def _quick_failure() -> Iterator[None]:
    """An unreachable server fails in seconds, not after minutes of retries; the
    client's "View run at" lines stay off our output (the caller prints one per run)."""
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
             "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    saved = {name: os.environ.get(name) for name in quick}
    os.environ.update({k: v for k, v in quick.items() if saved[k] is None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def _client(uri: str) -> Any:
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ExportError("export needs the MLflow client: pip install "
                          "'jupyter_compute[mlflow]' (or mlflow-skinny)") from None
    return MlflowClient(tracking_uri=uri)


def _why(exc: Exception, uri: str) -> str:
    text = str(getattr(exc, "message", None) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if re.search(r"(?i)connect|max retries|timed? ?out|refused|resolve", first):
        return (f"cannot reach the MLflow server at {uri}: check the URI and that the "
                "server is running")
    return f"MLflow at {uri} refused the export: {first[:300]}"


def _experiment_id(client: Any, name: str) -> str:
    found = client.get_experiment_by_name(name)
    return str(found.experiment_id) if found else str(client.create_experiment(name))


def _exported_before(client: Any, experiment_id: str) -> dict[str, Any]:
    """The experiment's MLflow runs that came from us, by our run id: one search (a few
    pages), not one per run."""
    found: dict[str, Any] = {}
    token = None
    while True:
        page = client.search_runs([experiment_id], f"tags.`{RUN_ID_TAG}` LIKE '%'",
                                  max_results=1000, page_token=token)
        found.update((r.data.tags[RUN_ID_TAG], r) for r in page)
        token = page.token
        if not token:
            return found


def _trials(run: Run) -> list[Run]:
    from jupyter_compute.sweep.handle import Sweep

    return sorted(run.children(), key=lambda r: r.id) if isinstance(run, Sweep) else []


def _export_run(client: Any, experiment_id: str, run: Run, parent: str | None,
                existing: Any) -> Exported:
    from mlflow.entities import Metric, Param, RunTag

    from jupyter_compute import runinfo

    d = {**run.to_dict(), **runinfo.details(run)}
    tags = _tags(run, d)
    if parent:
        tags["mlflow.parentRunId"] = parent
    if existing:
        mlflow_id = existing.info.run_id
        known_params = existing.data.params
    else:
        mlflow_id = client.create_run(experiment_id, start_time=_ms(d["started"] or d["created"]),
                                      tags=tags, run_name=run.name).info.run_id
        known_params = {}
    params = [Param(_key(k), str(v)[:6000]) for k, v in runinfo.params(run).items()
              if known_params.get(_key(k)) != str(v)[:6000]]
    metrics = [Metric(_key(name), float(rec["value"]), int(float(rec["time"]) * 1000),
                      int(rec.get("step") or 0))
               for name, records in run.metrics().items() for rec in records
               if rec.get("kind", "scalar") == "scalar" and _is_number(rec.get("value"))]
    if existing:  # a point already in MLflow is not sent again
        seen = {(m.key, m.timestamp, m.step, m.value) for key in {m.key for m in metrics}
                for m in client.get_metric_history(mlflow_id, key)}
        metrics = [m for m in metrics if (m.key, m.timestamp, m.step, m.value) not in seen]
    tag_list = [RunTag(k, v) for k, v in tags.items()]
    # As few calls as MLflow's limits allow: usually one.
    for i in range(max(-(-len(metrics) // _BATCH_METRICS), -(-len(params) // _BATCH_PARAMS),
                       -(-len(tag_list) // _BATCH_TAGS))):
        client.log_batch(mlflow_id, metrics=metrics[i * _BATCH_METRICS:(i + 1) * _BATCH_METRICS],
                         params=params[i * _BATCH_PARAMS:(i + 1) * _BATCH_PARAMS],
                         tags=tag_list[i * _BATCH_TAGS:(i + 1) * _BATCH_TAGS])
    outputs = run.target.outputs_dir(run.id)
    if d["outputs"] and outputs.is_dir():
        client.log_artifacts(mlflow_id, str(outputs))
    status = _STATUS.get(d["status"])
    if status:
        client.set_terminated(mlflow_id, status, end_time=_ms(d["ended"]) if d["ended"]
                              else None)
    return Exported(run.id, mlflow_id, bool(existing))


def _tags(run: Run, d: dict[str, Any]) -> dict[str, str]:
    """The run's own tags, then ours: where and what it ran, and its source."""
    tags = {_key(k): str(v)[:5000] for k, v in d.get("tags", {}).items()}
    git, snapshot = d.get("git") or {}, d.get("snapshot") or {}
    ours = {RUN_ID_TAG: run.id, "jupyter_compute.target": d.get("target"),
            "jupyter_compute.status": d.get("status"),
            "jupyter_compute.snapshot": snapshot.get("id"),
            "jupyter_compute.script": d.get("script"),
            "mlflow.runName": run.name, "mlflow.source.name": d.get("script"),
            "mlflow.source.git.commit": git.get("commit"),
            "mlflow.source.git.branch": git.get("branch"),
            "mlflow.source.git.repoURL": git.get("repository"),
            "jupyter_compute.git.dirty": None if git.get("commit") is None
            else str(bool(git.get("dirty"))).lower()}
    if d.get("started") and d.get("ended"):
        seconds = (datetime.fromisoformat(d["ended"]) -
                   datetime.fromisoformat(d["started"])).total_seconds()
        ours["jupyter_compute.duration_seconds"] = f"{seconds:.3f}"
    tags.update({k: str(v) for k, v in ours.items() if v is not None})
    return tags


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def _key(name: str) -> str:
    """A name MLflow accepts: letters, digits, ``_ - . space : /``; others become ``_``."""
    return re.sub(r"[^\w\-. :/]", "_", str(name))[:250] or "_"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
