"""A real Docker engine and the local Python base image, for the docker tests and benchmark.

::

    reason = dockerd.unavailable()      # None when the engine can be used here
    dockerd.ensure()                    # start dockerd, build the base image (both once)
    client = dockerd.client()
    ...
    dockerd.remove_containers(str(tmp)) # containers of runs whose workspace is under tmp

``ensure`` runs the project's own scripts: ``scripts/start-dockerd.sh`` (dockerd with
``--iptables=false --bridge=none``: the machine's network stays as it was) and
``scripts/docker-base-image.sh`` (debootstrap + ``docker import``, ~70 s the first
time on a machine, nothing after). No registry is ever contacted.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
#: Built by scripts/docker-base-image.sh; the docker target's default image.
IMAGE = "jupyter-compute/python3:base"
LABEL_WORKSPACE = "jupyter_compute.workspace"
LABEL_RUN = "jupyter_compute.run"


def unavailable() -> str | None:
    """Why the docker tests cannot run here, or None when they can."""
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker SDK is missing: pip install -e '.[test]'"
    if not (shutil.which("dockerd") or os.path.exists("/usr/sbin/dockerd")):
        return "dockerd is missing: run scripts/install-test-deps.sh"
    if os.geteuid() != 0:
        return "starting dockerd and building the base image with debootstrap need root"
    return None


def ensure(timeout: float = 900) -> None:
    """Start the engine unless it runs, and build the base image unless it exists."""
    for script in ("start-dockerd.sh", "docker-base-image.sh"):
        done = subprocess.run(["bash", str(SCRIPTS / script)], capture_output=True, text=True,
                              timeout=timeout)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise RuntimeError(f"scripts/{script} failed: " + " | ".join(tail))


def client():  # -> docker.DockerClient (the SDK is imported lazily)
    """A client of the local engine."""
    import docker

    return docker.from_env(version="auto")


def containers(workspace_prefix: str, run_id: str | None = None) -> list:
    """Containers (any state) of runs whose workspace lies under ``workspace_prefix``."""
    found = client().containers.list(all=True, sparse=True,
                                     filters={"label": [LABEL_WORKSPACE]})
    out = []
    for c in found:
        labels = c.attrs.get("Labels") or {}
        if not labels.get(LABEL_WORKSPACE, "").startswith(workspace_prefix):
            continue
        if run_id is None or labels.get(LABEL_RUN) == run_id:
            out.append(c)
    return out


def remove_containers(workspace_prefix: str) -> int:
    """Remove (with their volumes) the containers of runs under ``workspace_prefix``."""
    gone = 0
    for c in containers(workspace_prefix):
        try:
            c.remove(v=True, force=True)
            gone += 1
        except Exception:  # noqa: BLE001 - being removed already
            pass
    return gone


def run_processes(run_id: str) -> list[int]:
    """Live processes on this machine (containers' included) carrying ``run_id``."""
    marker = f"JUPYTER_COMPUTE_RUN_ID={run_id}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rindex(b")") + 2:].split()[0] == b"Z":
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found
