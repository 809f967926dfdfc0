"""What does an environment cost: a cold build, a warm reuse, and a host with no index.

Three figures, measured in the same session, medians of interleaved repetitions:

  cold build     a 6-package requirements file built by our builder (``envbuild``: uv
                 where it is found, a fresh env folder and uv cache each time) against
                 ``python -m venv`` + ``pip install -r`` (a fresh pip cache each time)
                 — goal ≤ 0.25×
  warm reuse     submit + wait of a trivial script on the local target, with the
                 (already built) environment against without one — goal ≤ +50 ms
  offline host   a ``kernel`` environment (a small client venv with a local package)
                 on an SSH host in a network namespace whose pip and uv reach no index:
                 first run (wheels downloaded here, shipped, built there) and second run
                 (nothing sent, environment reused) — needs root (sshd, ip netns)

    python benchmarks/bench_env.py [--repeat 5] [--warm-repeat 20] [--skip-offline]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

#: Six small packages with wheels, pinned, as in a typical requirements file.
REQUIREMENTS = "six==1.17.0\nattrs==25.3.0\nidna==3.10\npackaging==25.0\n" \
               "certifi==2025.8.3\ntomli==2.2.1\n"


def cold_builds(folder: Path, repeat: int) -> dict[str, list[float]]:
    """Seconds of our builder's cold build and of venv + pip install -r, interleaved."""
    from jupyter_compute import envbuild
    from jupyter_compute.environments import Environment, resolve

    reqs = folder / "requirements.txt"
    reqs.write_text(REQUIREMENTS)
    env = resolve(Environment(requirements=str(reqs)), folder)
    assert env is not None
    devnull = os.open(os.devnull, os.O_WRONLY)
    used: list[str] = []

    def ours() -> float:
        root = Path(tempfile.mkdtemp(prefix="env-root-", dir=folder))  # cold: no uv cache
        started = time.perf_counter()
        lease = envbuild.prepare(env, default_python=sys.executable, env_root=str(root),
                                 blobs=None, cwd=str(folder), say=lambda line: None,
                                 log_fd=devnull)
        seconds = time.perf_counter() - started
        assert not isinstance(lease, str)
        used.append(str(lease.installer))
        lease.release()
        shutil.rmtree(root, ignore_errors=True)
        return seconds

    def pip() -> float:
        target = Path(tempfile.mkdtemp(prefix="venv-", dir=folder))
        cache = Path(tempfile.mkdtemp(prefix="pip-cache-", dir=folder))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(target / "v")], check=True)
        subprocess.run([str(target / "v" / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "--cache-dir", str(cache), "-r",
                        str(reqs)], check=True)
        seconds = time.perf_counter() - started
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
        return seconds

    times: dict[str, list[float]] = {"our builder (cold)": [], "venv + pip install -r": []}
    for _ in range(repeat):
        times["our builder (cold)"].append(ours())
        times["venv + pip install -r"].append(pip())
    os.close(devnull)
    print(f"  (our builder used: {', '.join(sorted(set(used)))})")
    return times


def warm_submits(folder: Path, repeat: int) -> dict[str, list[float]]:
    """Seconds of submit + wait on the local target, with a built environment and without."""
    from jupyter_compute import RunStatus, submit

    project = folder / "warm"
    (project / ".jupyter_compute").mkdir(parents=True)
    (project / "hello.py").write_text("print('hello')\n")
    (project / "requirements.txt").write_text(REQUIREMENTS)
    os.chdir(project)

    def run(**kw: object) -> float:
        started = time.perf_counter()
        assert submit("hello.py", **kw).wait() is RunStatus.COMPLETED  # type: ignore[arg-type]
        return time.perf_counter() - started

    run(requirements="requirements.txt")  # builds it once; every timed one reuses it
    run()
    times: dict[str, list[float]] = {"submit, no environment": [],
                                     "submit, environment reused": []}
    for _ in range(repeat):
        times["submit, no environment"].append(run())
        times["submit, environment reused"].append(run(requirements="requirements.txt"))
    return times


def offline_host(folder: Path) -> dict[str, list[float]]:
    """Seconds of the first and second ``--env kernel`` submit --wait on an offline host."""
    from kernelvenv import kernel_cli, make_kernel_venv
    from test_ssh_offline import NOWHERE, SCRIPT, OfflineIsland

    import sshd

    python = make_kernel_venv(folder / "kernel")
    project = folder / "offline"
    (project / ".jupyter_compute").mkdir(parents=True)
    (project / "job.py").write_text(SCRIPT)
    sshd.ensure_user(sshd.USER)
    keys = Path(tempfile.mkdtemp(prefix="jc-bench-offline-"))
    keys.chmod(0o755)
    key = sshd.make_key(keys / "id_ed25519")
    workdir = f"jc-bench-offline-{os.getpid()}"
    times: dict[str, list[float]] = {}
    try:
        with OfflineIsland(user="root") as island, sshd.SSHServer(
                keys / "sshd", island.address, netns=island.name,
                extra=(f"SetEnv PIP_INDEX_URL={NOWHERE} UV_INDEX_URL={NOWHERE} "
                       f"UV_DEFAULT_INDEX={NOWHERE}",)) as server:
            server.authorize(sshd.USER, key)
            server.start()
            login = sshd.Login(server, key, f"~/{workdir}")
            out = kernel_cli(python, project, "attach", "island", "--type", "ssh",
                             *login.flags())
            assert out.returncode == 0, out.stderr
            for label in ("kernel env, offline host: 1st run", "kernel env, offline host: 2nd run"):
                started = time.perf_counter()
                out = kernel_cli(python, project, "submit", "job.py", "--target", "island",
                                 "--env", "kernel", "--wait")
                times[label] = [time.perf_counter() - started]
                assert out.returncode == 0 and "greeting:" in out.stdout, out.stdout + out.stderr
    finally:
        shutil.rmtree(Path(os.path.expanduser(f"~{sshd.USER}")) / workdir, ignore_errors=True)
        shutil.rmtree(keys, ignore_errors=True)
    return times


def table(title: str, times: dict[str, list[float]], base: str | None = None) -> None:
    print(f"\n{title}")
    base_median = statistics.median(times[base]) if base else None
    for name, values in times.items():
        med = statistics.median(values)
        extra = ""
        if base_median is not None and name != base:
            extra = f"   {med / base_median:5.2f}x   {(med - base_median) * 1000:+8.1f} ms"
        print(f"  {name:<36} {med * 1000:9.1f} ms  (n={len(values)}){extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5, help="cold builds of each kind")
    parser.add_argument("--warm-repeat", type=int, default=20, help="warm submits of each kind")
    parser.add_argument("--skip-offline", action="store_true",
                        help="leave out the offline SSH host (it needs root)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-env-"))
    try:
        cold = cold_builds(folder, args.repeat)
        table("cold build of a 6-package requirements file (goal: ≤ 0.25×)", cold,
              base="venv + pip install -r")
        warm = warm_submits(folder, args.warm_repeat)
        table("warm reuse on the local target (goal: ≤ +50 ms)", warm,
              base="submit, no environment")
        if not args.skip_offline:
            table("kernel environment on an SSH host with no index (goal: works / reuses)",
                  offline_host(folder))
    finally:
        os.chdir("/")
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
