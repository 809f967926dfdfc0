"""``SSHTarget``: the ssh kind, an SSH host × the process-or-container launcher (see the
package's docstring)."""

from __future__ import annotations

from jupyter_compute.targets.base import Target
from jupyter_compute.targets.ssh.host import SSHHost
from jupyter_compute.targets.ssh.launcher import ProcessOrContainer
from jupyter_compute.targets.ssh.options import TARGET_OPTIONS

__all__ = ["SSHTarget"]


class SSHTarget(Target):
    """A VM or server reached over SSH (paramiko); see the package docstring.

    >>> attach("vm", "ssh", host="10.0.0.5", user="me", key="~/.ssh/id_ed25519")
    >>> submit("train.py", target="vm").wait()
    <RunStatus.COMPLETED: 'Completed'>
    """

    kind = "ssh"
    host_type = SSHHost
    launcher_type = ProcessOrContainer
    options = TARGET_OPTIONS
