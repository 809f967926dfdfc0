"""The ``ssh`` target: runs on any machine reachable by SSH that has Python ≥ 3.9.

::

    jupyter-compute attach vm --type ssh --host 10.0.0.5 --user me --key ~/.ssh/id_ed25519
    jupyter-compute submit train.py --target vm --wait -- --epochs 3
    jupyter-compute attach gpu --type ssh --host 10.0.0.6 --docker-image pytorch:2 --gpus all
    jupyter-compute attach lab --type ssh --host lab-vm          # a Host in ~/.ssh/config
    jupyter-compute attach lab --type ssh --host 10.1.0.7 --proxy-jump me@bastion:2222

An SSH host (``host.py``: the connection, sync, the local mirror of what is read,
the fetch of outputs) × a launcher chosen per run (``launcher.py``): the agent as a
detached process, or, where the target or the run names a Docker image, as a
container on the host's engine (``container.py``). Nothing is installed on the host:
the agent and the tracking API travel with the runs. ``--host`` may be an alias of
the ssh config, and a host behind a bastion is reached through ``--proxy-jump``
or the config's ``ProxyJump`` (``sshconfig.py``).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["DEFAULT_SSH_CONFIG", "SYNC_RECORD", "HostKeyError", "HostUnreachableError",
           "RemotePythonError", "SSHAuthError", "SSHHost", "SSHTarget", "SyncStats"]

_WHERE = {
    "SSHTarget": "jupyter_compute.targets.ssh.target",
    **{name: "jupyter_compute.targets.ssh.host" for name in (
        "SSHHost", "SyncStats", "SYNC_RECORD")},
    **{name: "jupyter_compute.targets.ssh.connection" for name in (
        "HostUnreachableError", "RemotePythonError", "SSHAuthError")},
    "HostKeyError": "jupyter_compute.targets.ssh.hostkeys",
    "DEFAULT_SSH_CONFIG": "jupyter_compute.targets.ssh.options",
}


def __getattr__(name: str) -> Any:
    # Lazy: paramiko (~100 ms) loads with the first name that needs it, so the kinds
    # that only offer ssh's options (slurm, spark) do not import it on this machine.
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'jupyter_compute.targets.ssh' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
