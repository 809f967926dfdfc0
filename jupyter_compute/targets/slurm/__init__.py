"""The ``slurm`` kind: each run is one Slurm batch job (``sbatch``).

::

    %compute attach hpc --type slurm --max-nodes 2 --idle-seconds 60   # embedded cluster
    %compute attach uni --type slurm --host login.uni.edu --user me --partition gpu \\
        --gres gpu:1 --time 2:00:00 --sbatch-arg=--exclusive             # through a login node
    %compute attach here --type slurm --local                          # sbatch on PATH
    %%submit --target hpc
    import train; train.main()

A host × the sbatch launcher (``launcher.py``):

- no ``--host``, no ``--local``: an **embedded** Slurm cluster this project starts and
  owns (``cluster.py``): munge, slurmctld and CLOUD-node slurmds on loopback; nodes
  power up when jobs need them (0..``max_nodes``) and down after ``idle_seconds``. It
  starts on first use or with ``start NAME``, stops with ``stop NAME``, and outlives
  the kernel. Runs live in the workspace (``LocalHost``).
- ``--host``: an existing cluster's login node, reached as an SSH target is
  (``login.py``); run folders live there, on the cluster's shared file system.
- ``--local``: an existing cluster whose ``sbatch`` is on this machine's PATH.
"""

from __future__ import annotations

from jupyter_compute.exceptions import UsageError
from jupyter_compute.targets.base import Cluster, Target
from jupyter_compute.targets.local import LocalHost
from jupyter_compute.targets.slurm.launcher import SbatchLauncher, job_record
from jupyter_compute.targets.ssh.options import TARGET_OPTIONS

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.store import RunRecord
    from jupyter_compute.targets.base import Host, Launcher

__all__ = ["SlurmTarget"]

class SlurmTarget(Target, Cluster):
    """Runs as Slurm batch jobs; see the module docstring.

    >>> attach("hpc", "slurm", max_nodes=2, idle_seconds=60)
    >>> submit("train.py", target="hpc").wait()
    <RunStatus.COMPLETED: 'Completed'>
    """

    kind = "slurm"
    host_type = LocalHost
    launcher_type = SbatchLauncher
    options = {**TARGET_OPTIONS, **LocalHost.options, **SbatchLauncher.options}
    launcher: SbatchLauncher
    rank_placement = "slurm"  # sbatch -N N --ntasks-per-node K, the ranks by srun (ranks.py)

    def check_ranks(self, spec: RunSpec) -> None:
        super().check_ranks(spec)
        if spec.distribution is not None and spec.distribution.type == "mpi" and \
                self.launcher.embedded:
            import shutil

            if shutil.which("mpirun") is None:
                from jupyter_compute.ranks import MPI_INSTALL_HINT

                raise UsageError(f"distribution type mpi starts the ranks under mpirun, which "
                                 f"is not on this machine's PATH: {MPI_INSTALL_HINT}")

    def max_nodes(self) -> int | None:
        limit = self.config.get("max_nodes")
        if limit is None and self.launcher.embedded:
            limit = 2  # the embedded cluster's default (SbatchLauncher.cluster)
        return int(limit) if limit is not None else None

    @classmethod
    def compose(cls, config: dict[str, Any]) -> tuple[type[Host], type[Launcher]]:
        if config.get("host") and config.get("local"):
            raise UsageError("--host and --local name two different clusters; give one")
        if config.get("host"):  # paramiko only for a login node
            from jupyter_compute.targets.slurm.login import SlurmLoginHost

            return SlurmLoginHost, SbatchLauncher
        return LocalHost, SbatchLauncher

    def describe(self) -> dict[str, Any]:
        found = super().describe()
        if self.launcher.embedded:
            found["cluster"] = "running" if self.launcher.cluster().running() else "stopped"
        return found

    def job(self, run_id: str) -> dict[str, Any] | None:
        """``{id, state}`` of the run's Slurm job (``show --json``'s ``target_job``)."""
        rec = job_record(self.workspace, run_id)
        if rec is None:
            return None
        try:
            found = self.launcher.job(self.host, run_id, rec)
        except Exception:  # noqa: BLE001 - a stopped cluster still has a job id to show
            found = None
        return {"id": rec["job_id"], "state": found["state"] if found else None}

    def submit_array(self, specs: list[RunSpec], concurrency: int
                     ) -> list[tuple[RunRecord, list[str]]]:
        """Submit ``specs`` as ordinary runs that start as one Slurm job array, at most
        ``concurrency`` tasks at a time (``--array=0-N%K``): a sweep's trials. If the
        array cannot be submitted, every one of its runs ends Failed with the reason."""
        submitted: list[tuple[RunRecord, list[str]]] = []
        with self.launcher.collect() as runs:
            try:
                for spec in specs:
                    submitted.append(self.submit(spec))
            except Exception as exc:
                for record, _ in submitted:
                    self._fail(record.id, f"not started: another run of its array failed "
                                          f"to submit ({exc})")
                raise
        if not runs:
            return submitted
        try:
            self.launcher.submit_array(self.host, runs, concurrency, submitted[0][0].name)
        except Exception as exc:
            for record, _ in submitted:
                self._fail(record.id, str(exc))
            raise
        return submitted

    # -- the cluster -------------------------------------------------------------------

    def start(self) -> None:
        """Start the embedded cluster's controller (nodes power up on demand)."""
        if not self.launcher.embedded:
            raise UsageError(f"{self.name!r} is an existing Slurm cluster; jupyter_compute "
                             "neither starts nor stops it")
        self.launcher.cluster().ensure()
        self.launcher.forget()

    def stop(self) -> None:
        """Cancel the embedded cluster's jobs and end its daemons (only those)."""
        if not self.launcher.embedded:
            raise UsageError(f"{self.name!r} is an existing Slurm cluster; jupyter_compute "
                             "neither starts nor stops it")
        self.launcher.cluster().stop()
        self.launcher.forget()

    def nodes(self) -> dict[str, Any]:
        """``{current, idle, allocated, powered_down, pending, min, max, running}``."""
        return self.launcher.nodes(self.host)
