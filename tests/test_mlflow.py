"""MLflow inside every run: an unchanged script that logs with ``mlflow`` records into
the run (params, metrics with steps, tags, artifacts), and runs export to a real
MLflow tracking server. The ``mlflow`` client and server are the real ones."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Project

pytest.importorskip("mlflow")

#: A script written for MLflow, unchanged: it knows nothing of jupyter_compute.
MLFLOW_SCRIPT = """
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow

with mlflow.start_run():
    mlflow.log_param("lr", 0.1)
    mlflow.log_params({"epochs": 3, "optimizer": "adam"})
    for step in range(3):
        mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
    mlflow.log_metrics({"accuracy": 0.9, "f1": 0.8}, step=2)
    mlflow.set_tag("dataset", "toy")
    mlflow.set_tags({"stage": "dev"})
    with open("notes.txt", "w") as f:
        f.write("hello")
    mlflow.log_artifact("notes.txt")
    mlflow.log_dict({"layers": 2}, "config/model.json")
    mlflow.log_text("some text", "text.txt")
    fig = plt.figure()
    plt.plot([1, 2, 3])
    mlflow.log_figure(fig, "curve.png")
    with mlflow.start_run(run_name="fold1", nested=True):
        mlflow.log_metric("val_loss", 0.5, step=7)
        mlflow.log_param("fold", 1)
    run = mlflow.get_run(mlflow.active_run().info.run_id)
    print("params seen by mlflow:", sorted(run.data.params))
    # which store answered (the in-process one, found through its entry point)
    mlflow.set_tag("store", type(mlflow.MlflowClient()._tracking_client.store).__name__)
"""


def check_recorded(shown: dict, metrics: dict) -> None:
    """What the unchanged MLflow script must have left in the run, on any target."""
    assert shown["status"] == "Completed", shown.get("error")
    params = shown["params"]
    assert params["lr"] == "0.1" and params["epochs"] == "3" and params["optimizer"] == "adam"
    assert params["fold1/fold"] == "1"  # the nested run's, under its name
    assert shown["tags"]["dataset"] == "toy" and shown["tags"]["stage"] == "dev"
    assert shown["tags"]["store"] == "JupyterComputeStore"  # the fast path, on every target
    assert not any(name.startswith("mlflow.") for name in shown["tags"])
    assert [(m["step"], m["value"]) for m in metrics["loss"]] == [(0, 1.0), (1, 0.5),
                                                                  (2, 1.0 / 3)]
    assert metrics["accuracy"][0]["step"] == 2 and metrics["fold1/val_loss"][0]["step"] == 7
    outputs = {o["path"]: o["size"] for o in shown["outputs"]}
    assert outputs["notes.txt"] == 5 and outputs["text.txt"] == 9
    assert {"config/model.json", "curve.png"} <= set(outputs)


def test_unchanged_mlflow_script_records_into_the_run(project: Project) -> None:
    project.write("train.py", MLFLOW_SCRIPT)
    # A host with an HTTP proxy (nothing listens on port 9): loopback calls bypass it.
    dead_proxy = "http://127.0.0.1:9"
    out = project.cli("submit", "train.py", "--wait", timeout=180,
                      env={"HTTP_PROXY": dead_proxy, "http_proxy": dead_proxy})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "params seen by mlflow: ['epochs', 'lr', 'optimizer']" in out.stdout
    run_id = out.stderr.split()[1]
    shown = project.show(run_id)
    metrics = json.loads(project.cli("metrics", run_id, "--json").stdout)
    check_recorded(shown, metrics)
    assert "fold1/fold" not in metrics and "lr" not in metrics  # params are not metrics
    listed = json.loads(project.cli("runs", "--json").stdout)[0]
    assert listed["params"] == shown["params"] and listed["outputs"] == shown["outputs"]


def test_script_with_its_own_tracking_uri_keeps_it(project: Project, tmp_path) -> None:
    store = tmp_path / "own-mlruns"
    project.write("train.py", """
        import os
        import mlflow
        print("uri", os.environ["MLFLOW_TRACKING_URI"])
        mlflow.log_metric("loss", 0.5)
    """)
    out = project.cli("submit", "train.py", "--wait", timeout=180,
                      env={"MLFLOW_TRACKING_URI": store.as_uri(),
                           "MLFLOW_ALLOW_FILE_STORE": "true"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"uri {store.as_uri()}" in out.stdout
    run_id = out.stderr.split()[1]
    assert json.loads(project.cli("metrics", run_id, "--json").stdout) == {}
    assert any(store.rglob("loss"))  # mlflow wrote to the user's own store


def test_an_mlflow_call_we_do_not_serve_is_named_at_once(project: Project) -> None:
    project.write("train.py", """
        import sys
        import time
        import mlflow
        from mlflow import MlflowClient
        # The fast path: MLflow's client records in this process, through our store.
        store = type(MlflowClient()._tracking_client.store).__name__
        print(f"uri {mlflow.get_tracking_uri().split(':')[0]} {store}")
        start = time.monotonic()
        try:
            MlflowClient().delete_run(mlflow.start_run().info.run_id)
        except mlflow.exceptions.MlflowException as exc:
            # One write with its newline: print() writes the end apart (unbuffered, as
            # a run's stdout is), and the store's stderr line, which the agent relays
            # into the same log, could land between the two.
            sys.stdout.write(f"error: {exc.error_code} {exc.message} after "
                             f"{time.monotonic() - start:.1f}s\\n")
        # The same run's REST endpoint, for anything that speaks HTTP (the URI's address).
        import json, os, urllib.request, urllib.error
        url = os.environ["MLFLOW_TRACKING_URI"].replace("jupyter-compute://", "http://")
        def post(path, body, token):
            request = urllib.request.Request(url + "/api/2.0/mlflow/" + path, method="POST",
                                             data=json.dumps(body).encode(), headers=token)
            try:
                return urllib.request.urlopen(request).status
            except urllib.error.HTTPError as exc:
                return f"{exc.code} {json.load(exc)['message']}"
        run_id = os.environ["JUPYTER_COMPUTE_RUN_ID"]
        bearer = {"Authorization": "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]}
        said = post("runs/log-metric", {"run_id": run_id, "key": "via_http", "value": 2,
                                        "step": 4}, bearer)
        print(f"over http: {said}")
        said = post("runs/delete", {"run_id": run_id}, bearer)
        print(f"over http: {said}")
        # Without the run's token (another user on the host): refused, nothing recorded.
        said = post("runs/log-metric", {"run_id": run_id, "key": "forged", "value": 1}, {})
        print(f"without token: {said}")
    """)
    out = project.cli("submit", "train.py", "--wait", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "uri jupyter-compute JupyterComputeStore" in out.stdout
    line = next(line for line in out.stdout.splitlines() if line.startswith("error:"))
    assert ("ENDPOINT_NOT_FOUND jupyter_compute does not serve POST /api/2.0/mlflow/runs/delete"
            in line)
    assert float(line.rsplit("after ", 1)[1].rstrip("s")) < 5  # no retries, no hang
    # said once in the run's log, by the script's store and by the agent's endpoint
    assert "[jupyter_compute] mlflow: jupyter_compute does not serve POST" in out.stdout
    assert "[agent] mlflow: jupyter_compute does not serve POST" in out.stdout
    assert "over http: 200" in out.stdout
    assert "over http: 404 jupyter_compute does not serve POST /api/2.0/mlflow/runs/delete" \
        in out.stdout
    assert "without token: 401" in out.stdout
    run_id = out.stderr.split()[1]
    metrics = json.loads(project.cli("metrics", run_id, "--json").stdout)
    assert "forged" not in metrics
    assert [(m["step"], m["value"]) for m in metrics["via_http"]] == [(4, 2.0)]


SKLEARN_SCRIPT = """
import mlflow
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

mlflow.autolog()
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=300, C=0.5).fit(X, y)
print("score", model.score(X, y))
"""


def test_sklearn_autolog_runs_unchanged(project: Project) -> None:
    pytest.importorskip("sklearn")
    project.write("train.py", SKLEARN_SCRIPT)
    out = project.cli("submit", "train.py", "--wait", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = out.stderr.split()[1]
    shown = project.show(run_id)
    assert shown["params"]["C"] == "0.5" and shown["params"]["max_iter"] == "300"
    assert shown["tags"]["estimator_name"] == "LogisticRegression"
    metrics = json.loads(project.cli("metrics", run_id, "--json").stdout)
    assert metrics["training_accuracy_score"][-1]["value"] > 0.9
    paths = [o["path"] for o in shown["outputs"]]
    assert any(p.startswith("models/") and p.endswith("MLmodel") for p in paths)


def test_outputs_download_and_log_params(project: Project, tmp_path) -> None:
    project.write("train.py", """
        from jupyter_compute.tracking import get_run
        run = get_run()
        run.log_param("lr", 0.01)
        run.log_params({"layers": 3, "act": "relu"})
        with open("outputs/model.json", "w") as f:
            f.write("{}")
        import os
        os.makedirs("outputs/sub")
        with open("outputs/sub/b.txt", "w") as f:
            f.write("bb")
    """)
    out = project.cli("submit", "train.py", "--wait")
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = out.stderr.split()[1]
    assert project.show(run_id)["params"] == {"lr": 0.01, "layers": 3, "act": "relu"}
    shown = project.cli("show", run_id).stdout  # the text form lists them too
    assert "params:      lr=0.01, layers=3, act=relu" in shown, shown
    assert "outputs:     model.json (2 B), sub/b.txt (2 B)" in shown, shown
    listed = project.cli("outputs", run_id)
    assert listed.returncode == 0 and "model.json" in listed.stdout and "sub/b.txt" in listed.stdout
    dest = tmp_path / "got"
    got = project.cli("outputs", run_id, "--download", str(dest))
    assert got.returncode == 0, got.stderr
    assert (dest / "model.json").read_text() == "{}"
    assert (dest / "sub" / "b.txt").read_text() == "bb"


# -- export to a real MLflow tracking server -------------------------------------------


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` (the full package) on loopback: sqlite in tmp, serving artifacts."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen(
        [mlflow_cli, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--serve-artifacts",
         "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                log.close()
                pytest.fail("mlflow server did not start:\n" +
                            (root / "server.log").read_text()[-2000:])
            time.sleep(0.3)
    yield uri
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    log.close()


def test_export_to_mlflow_server_reads_back_and_is_idempotent(project: Project,
                                                             mlflow_server: str) -> None:
    from mlflow import MlflowClient

    project.write("train.py", MLFLOW_SCRIPT)
    out = project.cli("submit", "train.py", "--wait", timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    run_id = out.stderr.split()[1]
    shown = project.show(run_id)

    first = project.cli("export", run_id, "--mlflow", mlflow_server, "--experiment", "exp1")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"exported {run_id} to MLflow run ")
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("exp1")
    found = client.search_runs([experiment.experiment_id],
                               f"tags.`jupyter_compute.run_id` = '{run_id}'")
    assert len(found) == 1
    got = found[0]
    assert got.data.params["lr"] == "0.1" and got.data.params["fold1/fold"] == "1"
    history = client.get_metric_history(got.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1.0 / 3)]
    assert got.data.tags["dataset"] == "toy"
    assert got.data.tags["jupyter_compute.target"] == "local"
    assert got.data.tags["jupyter_compute.snapshot"] == shown["snapshot"]["id"]
    assert float(got.data.tags["jupyter_compute.duration_seconds"]) > 0
    assert got.info.status == "FINISHED"
    names = {a.path for a in client.list_artifacts(got.info.run_id)}
    assert {"notes.txt", "text.txt", "curve.png", "config"} <= names

    again = project.cli("export", run_id, "--mlflow", mlflow_server, "--experiment", "exp1")
    assert again.returncode == 0, again.stderr
    assert f"MLflow run {got.info.run_id} (updated)" in again.stdout
    assert len(client.search_runs([experiment.experiment_id])) == 1
    assert len(client.get_metric_history(got.info.run_id, "loss")) == 3  # not sent twice


def test_sweep_exports_as_parent_with_children(project: Project, mlflow_server: str) -> None:
    from mlflow import MlflowClient

    project.write("train.py", """
        import argparse
        import mlflow
        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float)
        lr = parser.parse_args().lr
        mlflow.log_param("lr_seen", lr)
        mlflow.log_metric("accuracy", 1 - lr, step=1)
    """)
    project.write("sweep.yml", """
        sampling:
          type: grid
          parameter_space:
          - name: --lr
            expression: choice
            values: [0.1, 0.2]
        primary_metric_name: accuracy
        primary_metric_goal: Maximize
        max_total_runs: 2
        max_concurrent_runs: 2
    """)
    out = project.cli("sweep", "train.py", "--config", "sweep.yml", "--wait", "--json",
                      timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    sweep_id = json.loads(out.stdout)["id"]
    exported = project.cli("export", sweep_id, "--mlflow", mlflow_server,
                           "--experiment", "sweeps")
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == 3  # the sweep and its two trials
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("sweeps").experiment_id
    parent = client.search_runs([exp], f"tags.`jupyter_compute.run_id` = '{sweep_id}'")[0]
    children = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.params["lr_seen"] for c in children) == ["0.1", "0.2"]
    assert sorted(c.data.metrics["accuracy"] for c in children) == [0.8, 0.9]


def test_export_to_an_unreachable_server_is_one_line(project: Project) -> None:
    project.write("train.py", "print('hi')\n")
    out = project.cli("submit", "train.py", "--wait")
    run_id = out.stderr.split()[1]
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    got = project.cli("export", run_id, "--mlflow", f"http://127.0.0.1:{port}", timeout=60)
    assert got.returncode == 1
    assert got.stderr.strip() == (f"jupyter-compute export: error: cannot reach the MLflow "
                                  f"server at http://127.0.0.1:{port}: check the URI and that "
                                  "the server is running")
    assert time.monotonic() - start < 30
