"""What does logging through MLflow cost inside a run, against our own tracking API?

Three figures, all measured in this session on the local target:

1. In one run, ``--calls`` (10,000) calls each way, ``--repeat`` times, medians:
     jupyter_compute.tracking   run.log("loss", v, step=i)       (an O_APPEND write)
     mlflow.log_metric          through the run's MLflow endpoint (one HTTP round trip)
     mlflow, async              the same with MLFLOW_ENABLE_ASYNC_LOGGING=true (batched)
     raw HTTP keep-alive        http.client POSTs of log-metric: the endpoint's own share
2. A metric logged through MLflow → seen by a follower reading the run
   (``Run.read_metrics``, polled every 10 ms): p50 and p95 of the delay.
3. Export of a ``--sweep``-trial sweep (100) to a local ``mlflow server``: the time.

    python benchmarks/bench_tracking.py [--calls 10000] [--repeat 3] [--sweep 100]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

IN_RUN = r"""
import http.client, json, os, statistics, sys, time
import mlflow
from jupyter_compute.tracking import get_run

calls, repeat = int(sys.argv[1]), int(sys.argv[2])
run = get_run()
mlflow.start_run()
mlflow.log_metric("warm", 0.0)
uri = os.environ["MLFLOW_TRACKING_URI"].removeprefix("http://")

def ours():
    for i in range(calls):
        run.log("ours", 1.0 / (i + 1), step=i)

def via_mlflow():
    for i in range(calls):
        mlflow.log_metric("mlflow", 1.0 / (i + 1), step=i)

def via_mlflow_async():
    for i in range(calls):
        mlflow.log_metric("mlflow_async", 1.0 / (i + 1), step=i, synchronous=False)
    mlflow.flush_async_logging()

def raw_http():
    conn = http.client.HTTPConnection(uri)
    for i in range(calls):
        body = json.dumps({"run_id": run.id, "key": "raw", "value": 1.0 / (i + 1),
                           "timestamp": int(time.time() * 1000), "step": i})
        conn.request("POST", "/api/2.0/mlflow/runs/log-metric", body,
                     {"Content-Type": "application/json", "Authorization":
                      "Bearer " + os.environ["MLFLOW_TRACKING_TOKEN"]})
        conn.getresponse().read()
    conn.close()

out = {}
for name, fn in (("tracking run.log", ours), ("mlflow.log_metric", via_mlflow),
                 ("mlflow.log_metric async", via_mlflow_async),
                 ("raw HTTP keep-alive", raw_http)):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    out[name] = statistics.median(times)
print("RESULT " + json.dumps(out), flush=True)
"""

LATENCY = r"""
import time
import mlflow
mlflow.start_run()
for i in range(int(__import__("sys").argv[1])):
    mlflow.log_metric("sent_at", time.time(), step=i)
    time.sleep(0.05)
"""

TRIAL = r"""
import argparse
from jupyter_compute.tracking import get_run
p = argparse.ArgumentParser(); p.add_argument("--x", type=float)
x = p.parse_args().x
run = get_run()
run.log_param("x", x)
for step in range(20):
    run.log("score", x * step, step=step)
"""


def in_run(calls: int, repeat: int) -> dict[str, float]:
    from jupyter_compute import submit

    Path("inrun.py").write_text(IN_RUN)
    run = submit("inrun.py", arguments=[str(calls), str(repeat)])
    run.wait()
    line = next(x for x in run.log().splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])  # type: ignore[no-any-return]


def latency(points: int) -> list[float]:
    from jupyter_compute import submit

    Path("latency.py").write_text(LATENCY)
    run = submit("latency.py", arguments=[str(points)])
    delays, offset = [], 0
    while not run.status().is_terminal():
        records, offset = run.read_metrics(offset)
        now = time.time()
        delays += [now - r["value"] for r in records if r["name"] == "sent_at"]
        time.sleep(0.01)
    return delays


def export_sweep(trials: int) -> tuple[float, str]:
    from jupyter_compute import Run, mlflow_export

    Path("trial.py").write_text(TRIAL)
    Path("sweep.yml").write_text(
        "sampling:\n  type: grid\n  parameter_space:\n  - name: --x\n    expression: choice\n"
        f"    values: {list(range(trials))}\n"
        "primary_metric_name: score\nprimary_metric_goal: Maximize\n"
        f"max_total_runs: {trials}\nmax_concurrent_runs: 4\n")
    cli = str(Path(sys.executable).with_name("jupyter-compute"))
    out = subprocess.run([cli, "sweep", "trial.py", "-c", "sweep.yml", "--wait", "--json"],
                         capture_output=True, text=True, check=True)
    sweep = Run.get(json.loads(out.stdout)["id"])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--backend-store-uri",
         f"sqlite:///{Path.cwd() / 'mlflow.db'}", "--serve-artifacts",
         "--artifacts-destination", str(Path.cwd() / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.2)
        t0 = time.perf_counter()
        done = list(mlflow_export.export([sweep], uri, experiment="bench"))
        took = time.perf_counter() - t0
    finally:
        os.killpg(server.pid, 15)
        server.wait()
    return took, f"{len(done)} MLflow runs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--points", type=int, default=100, help="latency samples")
    parser.add_argument("--sweep", type=int, default=100, help="trials of the exported sweep")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    (folder / ".jupyter_compute").mkdir()
    os.chdir(folder)

    times = in_run(args.calls, args.repeat)
    base = times["tracking run.log"]
    print(f"{args.calls} calls in one run (median of {args.repeat})")
    print(f"{'':26} {'seconds':>8} {'per call':>10} {'vs run.log':>10}")
    for name, seconds in times.items():
        print(f"{name:26} {seconds:8.3f} {seconds / args.calls * 1e6:8.1f}µs "
              f"{seconds / base:9.1f}×")
    delays = sorted(latency(args.points))
    if delays:
        p95 = delays[min(len(delays) - 1, int(len(delays) * 0.95))]
        print(f"\nmlflow.log_metric → follower ({len(delays)} points): "
              f"p50 {statistics.median(delays) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms")
    if args.sweep:
        took, what = export_sweep(args.sweep)
        print(f"\nexport of a {args.sweep}-trial sweep ({what}) to mlflow server: {took:.1f} s")


if __name__ == "__main__":
    main()
