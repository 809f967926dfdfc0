"""What does a run on the ray target cost over raw Ray Jobs on the same cluster?

Starts one embedded cluster (0-2 nodes of 1 CPU) in a scratch workspace and times,
in the same session, medians of:

  cold start          submit with 0 worker nodes → a node alive / first line / done
  raw Ray Jobs        JobSubmissionClient.submit_job(python -u hello.py) + polling
                      get_job_logs / get_job_status (the baseline)
  ours, blob store    submit() on the embedded cluster: transport "shared" (the agent
                      reads the workspace's blob store; nothing is uploaded)
  ours, working_dir   the same run through transport "job-log": the snapshot travels
                      as the job's working_dir package, output comes back in the log
  … new snapshot      both again with a file changed before every run (a new
                      snapshot: new blobs, and a new package to zip and upload)
  raw, working_dir    submit_job(runtime_env={"working_dir": "."}): Ray's own upload

The project holds ``--mb`` MB of data files besides the script, so uploads show.
All runs use the same warm worker node. The cluster's processes are the only ones
stopped at the end (never ``ray stop``).

    python benchmarks/bench_ray.py [--repeat 7] [--mb 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HELLO = "print('first line', flush=True)\n"
POLL = 0.01


def first_line_and_done(t0: float, read_log: Callable[[], bytes],
                        is_done: Callable[[], bool]) -> tuple[float, float]:
    """Seconds from ``t0`` (just before submitting) to the first log line, and to the end."""
    first = None
    while True:
        if first is None and b"first line\n" in read_log():
            first = time.perf_counter() - t0
        if is_done():
            done = time.perf_counter() - t0
            if first is None and b"first line\n" in read_log():
                first = done
            return (first if first is not None else float("nan")), done
        time.sleep(POLL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--mb", type=float, default=8.0, help="data files in the project")
    parser.add_argument("--cold", type=int, default=2, help="cold starts from 0 nodes")
    args = parser.parse_args()

    from jupyter_compute import api
    from jupyter_compute.protocol import RunStatus

    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    (folder / ".jupyter_compute").mkdir()
    (folder / "hello.py").write_text(HELLO)
    data = folder / "data"
    data.mkdir()
    for i in range(max(1, int(args.mb))):
        (data / f"part{i}.bin").write_bytes(os.urandom(int(1024 * 1024 * min(1.0, args.mb))))
    os.chdir(folder)
    idle = 8
    target = api.attach("bench", "ray", min_nodes=0, max_nodes=2, node_cpus=1,
                        idle_seconds=idle)
    t0 = time.perf_counter()
    target.start()
    print(f"embedded head started in {time.perf_counter() - t0:.1f}s "
          f"({target.cluster().load().address})", file=sys.stderr)
    address = target.cluster().load().address
    # The embedded cluster uses Ray's token authentication; both clients get its token.
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=target.cluster().token() or "")
    api.attach("bench-wd", "ray", address=address, transport="job-log",
               token_env="RAY_AUTH_TOKEN")
    from ray.job_submission import JobStatus, JobSubmissionClient

    raw = JobSubmissionClient(address)
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        # -- cold: from 0 worker nodes -----------------------------------------------
        cold_node = []
        for _ in range(args.cold):
            while target.nodes()["current"] or target.nodes()["pending"]:
                time.sleep(1)
            t0 = time.perf_counter()
            run = api.submit("hello.py", target="bench")
            probe = api.get_target("bench")
            while True:
                if probe.launcher.nodes(max_age=0)["current"] >= 1:
                    break
                time.sleep(0.05)
            cold_node.append(time.perf_counter() - t0)
            results.setdefault("cold: ours, from 0 nodes", []).append(first_line_and_done(
                t0, run.read_log, lambda r=run: r.status().is_terminal()))  # type: ignore[misc]
            assert run.status() is RunStatus.COMPLETED, run.log()

        # -- warm: one node stays up while runs follow each other ----------------------
        def ours(target_name: str, change: bool) -> tuple[float, float]:
            if change:
                (folder / "changing.txt").write_text(os.urandom(8).hex())
            t0 = time.perf_counter()
            run = api.submit("hello.py", target=target_name)
            found = first_line_and_done(t0, run.read_log, lambda: run.status().is_terminal())
            assert run.status() is RunStatus.COMPLETED, run.log()
            return found

        def raw_job(working_dir: bool) -> tuple[float, float]:
            if working_dir:
                (folder / "changing.txt").write_text(os.urandom(8).hex())
            # Without a working_dir the job runs in Ray's folder: name the script fully.
            script = "hello.py" if working_dir else str(folder / "hello.py")
            t0 = time.perf_counter()
            job = raw.submit_job(entrypoint=f"{sys.executable} -u {script}",
                                 entrypoint_num_cpus=1,
                                 runtime_env={"working_dir": str(folder),
                                              "excludes": [".jupyter_compute"]}
                                 if working_dir else None)
            found = first_line_and_done(
                t0, lambda: raw.get_job_logs(job).encode(),
                lambda: raw.get_job_status(job) in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                    JobStatus.STOPPED))
            assert raw.get_job_status(job) == JobStatus.SUCCEEDED, raw.get_job_logs(job)
            return found

        variants = {
            "raw Ray Jobs (baseline)": lambda: raw_job(False),
            "ours, blob store": lambda: ours("bench", False),
            "ours, working_dir": lambda: ours("bench-wd", False),
            "ours, blob store, new snapshot": lambda: ours("bench", True),
            "ours, working_dir, new snapshot": lambda: ours("bench-wd", True),
            "raw Ray Jobs, working_dir": lambda: raw_job(True),
        }
        for fn in variants.values():  # warm each path once (imports, page cache, package)
            fn()
        for _ in range(args.repeat):  # interleaved, so drift hits every variant alike
            for name, fn in variants.items():
                results.setdefault(name, []).append(fn())
    finally:
        t0 = time.perf_counter()
        target.stop()
        print(f"cluster stopped in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        target.cluster().stop(remove_files=True)  # and its temp dir, outside the workspace
        shutil.rmtree(folder, ignore_errors=True)

    base_first = statistics.median(f for f, _ in results["raw Ray Jobs (baseline)"])
    base_done = statistics.median(d for _, d in results["raw Ray Jobs (baseline)"])
    print(f"\nworker node alive after submit, from 0 nodes: median "
          f"{statistics.median(cold_node):.2f}s ({len(cold_node)} runs)")
    print(f"{'':<34} {'first line':>11} {'vs raw':>8} {'done':>8} {'vs raw':>8}   "
          f"(medians of {args.repeat}; project {args.mb:g} MB)")
    for name, pairs in results.items():
        first = statistics.median(f for f, _ in pairs)
        done = statistics.median(d for _, d in pairs)
        print(f"{name:<34} {first:10.3f}s {first - base_first:+7.3f}s {done:7.3f}s "
              f"{done / base_done:7.2f}x")


if __name__ == "__main__":
    main()
