"""How much does a docker-target run cost over a bare ``docker run``?

Times a trivial script (``print("hello")``) on the same engine and image, in one warm
process, and prints medians:

  bare docker run   SDK: containers.run(detach) with the script bind-mounted read-only,
                    logs(stream, follow) until the first line, wait(), remove()
  docker target     API: submit() to a docker target, follow() until the script's first
                    line, wait() (which also removes the container)
  CLI (info)        jupyter-compute submit --wait: adds interpreter start and imports

"first line" is submit-to-first-log-line; "done" is submit-to-done. The goal for the
target's overhead over the bare run: <= 0.3 s.

    python benchmarks/bench_docker.py [--repeat 15]

Needs root and a Docker engine; starts one and builds the base image if needed
(tests/dockerd.py: scripts/start-dockerd.sh, scripts/docker-base-image.sh).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import dockerd  # noqa: E402

CLI = str(Path(sys.executable).with_name("jupyter-compute"))
SCRIPT = "print('hello', flush=True)\n"


def measure(fn: Callable[[], tuple[float, float]], repeat: int) -> list[tuple[float, float]]:
    fn()  # warm: page cache, image layers, snapshot cache, engine connection
    return [fn() for _ in range(repeat)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    reason = dockerd.unavailable()
    if reason:
        sys.exit(f"bench_docker: {reason}")
    dockerd.ensure()
    folder = Path(tempfile.mkdtemp(prefix="bench-docker-"))
    (folder / "hello.py").write_text(SCRIPT)
    (folder / ".jupyter_compute").mkdir()
    os.chdir(folder)

    from docker.types import Mount

    from jupyter_compute import RunStatus, api

    client = dockerd.client()

    def bare() -> tuple[float, float]:
        t0 = time.perf_counter()
        container = client.containers.run(
            dockerd.IMAGE, ["python3", "/src/hello.py"], detach=True, network_mode="none",
            mounts=[Mount("/src", str(folder), type="bind", read_only=True)])
        first = None
        for chunk in container.logs(stream=True, follow=True):
            if b"hello" in chunk:
                first = time.perf_counter() - t0
                break
        container.wait()
        container.remove(v=True)
        assert first is not None
        return first, time.perf_counter() - t0

    api.attach("bench", "docker", workspace=folder, replace=True)

    def target() -> tuple[float, float]:
        t0 = time.perf_counter()
        run = api.submit("hello.py", target="bench", workspace=folder)
        first = None
        for line in run.follow():
            if line.startswith("hello"):
                first = time.perf_counter() - t0
                break
        assert run.wait() is RunStatus.COMPLETED, run.log()
        assert first is not None
        return first, time.perf_counter() - t0

    def cli() -> tuple[float, float]:
        t0 = time.perf_counter()
        subprocess.run([CLI, "submit", "hello.py", "--target", "bench", "--wait"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done = time.perf_counter() - t0
        return float("nan"), done

    results = {"bare docker run (SDK)": measure(bare, args.repeat),
               "docker target (API)": measure(target, args.repeat),
               "CLI submit --wait": measure(cli, max(3, args.repeat // 3))}
    base = [statistics.median(t[i] for t in results["bare docker run (SDK)"]) for i in (0, 1)]
    print(f"\n{'':<24} {'first line':>11} {'overhead':>9}   {'done':>8} {'overhead':>9}"
          f"   ({args.repeat} runs, medians)")
    for name, times in results.items():
        first = statistics.median(t[0] for t in times)
        done = statistics.median(t[1] for t in times)
        first_cell = "-" if first != first else f"{first * 1000:9.0f}ms"  # nan: not measured
        first_over = "-" if first != first else f"{(first - base[0]) * 1000:+7.0f}ms"
        print(f"{name:<24} {first_cell:>11} {first_over:>9}   {done * 1000:6.0f}ms "
              f"{(done - base[1]) * 1000:+7.0f}ms")
    over = statistics.median(t[1] for t in results["docker target (API)"]) - base[1]
    print(f"\ntarget overhead over a bare docker run (done): {over * 1000:+.0f} ms "
          f"(goal <= +300 ms)")


if __name__ == "__main__":
    main()
