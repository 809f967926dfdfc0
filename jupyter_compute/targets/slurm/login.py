"""``SlurmLoginHost``: an existing cluster's login node, reached as an ssh target is."""

from __future__ import annotations

from jupyter_compute.targets.ssh.host import SSHHost

__all__ = ["SlurmLoginHost"]


class SlurmLoginHost(SSHHost):
    """A login node: an SSH host whose agents start as Slurm jobs, never with the sync."""

    starts_agent_with_sync = False
