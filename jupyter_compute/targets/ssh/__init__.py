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

from jupyter_compute.targets.base import Target
from jupyter_compute.targets.ssh.connection import (
    HostUnreachableError,
    RemotePythonError,
    SSHAuthError,
)
from jupyter_compute.targets.ssh.host import SYNC_RECORD, SSHHost, SyncStats
from jupyter_compute.targets.ssh.hostkeys import HostKeyError
from jupyter_compute.targets.ssh.launcher import ProcessOrContainer
from jupyter_compute.targets.ssh.sshconfig import DEFAULT_SSH_CONFIG

__all__ = ["SYNC_RECORD", "HostKeyError", "HostUnreachableError", "RemotePythonError",
           "SSHAuthError", "SSHHost", "SSHTarget", "SyncStats"]


class SSHTarget(Target):
    """A VM or server reached over SSH (paramiko); see the module docstring.

    >>> attach("vm", "ssh", host="10.0.0.5", user="me", key="~/.ssh/id_ed25519")
    >>> submit("train.py", target="vm").wait()
    <RunStatus.COMPLETED: 'Completed'>
    """

    kind = "ssh"
    host_type = SSHHost
    launcher_type = ProcessOrContainer
    options = {
        **SSHHost.options, **ProcessOrContainer.options,
        "host": (str, "host name or address, or a Host alias of the ssh config"),
        "ssh_config": (str, f"ssh config file whose Host entries --host may name (default "
                            f"{DEFAULT_SSH_CONFIG} if it exists)"),
        "proxy_jump": (str, "[user@]bastion[:port] to reach the host through (a,b for a "
                            "chain; default: the ssh config's ProxyJump)"),
        "trust_jump_host_key": (str, "SHA256:… fingerprint of the jump host's key to trust "
                                     "(comma-separated for a chain)"),
    }
