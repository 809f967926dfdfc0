"""The ``spark`` kind: PySpark scripts, unchanged, through ``spark-submit`` on a Spark
standalone cluster; executors scale with the work.

::

    %compute attach spark --type spark --max-executors 2 --executor-memory 1g
    %compute attach prod --type spark --master spark://head:7077          # an existing one
    %compute attach hdi --type spark --master spark://head:7077 --host head --user me
    %%submit --target spark
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.getOrCreate()      # master and conf from spark-submit

**Which cluster.** Without ``master`` the target owns an *embedded* standalone cluster
on this machine (``cluster.py``): a master and a worker on 127.0.0.1, started on
first use or with ``start``, stopped with ``stop``; it outlives the kernel. With
``master`` it uses an existing cluster and never starts or stops it.

**Where spark-submit runs** is the host: this machine, or with ``host`` an SSH head
node (HDInsight-style) that the snapshot reaches through the ssh target's host. A run
is the agent running spark-submit in client mode (``launcher.py``); the driver runs
where the agent runs (Python's cluster deploy mode does not exist on standalone).
"""

from __future__ import annotations

from jupyter_compute.exceptions import UsageError
from jupyter_compute.targets.base import Cluster, Target
from jupyter_compute.targets.local import LocalHost
from jupyter_compute.targets.spark.launcher import SparkSubmitLauncher

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.targets.base import Host, Launcher

__all__ = ["SparkTarget"]

#: Options of the SSH head node (``--host``), as the ssh target names them.
_SSH_OPTIONS = ("host", "port", "user", "key", "password_env", "key_passphrase_env",
                "workdir", "trust_host_key", "connect_timeout", "offline", "ssh_config",
                "proxy_jump", "trust_jump_host_key")


def _options() -> dict[str, Any]:
    from jupyter_compute.targets.ssh.options import TARGET_OPTIONS

    ssh = {k: v for k, v in TARGET_OPTIONS.items() if k in _SSH_OPTIONS}
    ssh["host"] = (str, "an SSH head node where spark-submit runs (default: this machine)")
    return {**LocalHost.options, **ssh, **SparkSubmitLauncher.options}


class SparkTarget(Target, Cluster):
    """Runs PySpark scripts on a Spark standalone cluster: the embedded one, or ``master``.

    >>> attach("spark", "spark", max_executors=2)
    >>> submit("wordcount.py", target="spark").wait()
    <RunStatus.COMPLETED: 'Completed'>
    >>> get_target("spark").nodes()
    {'current': 0, 'min': 0, 'max': 2, 'pending': 0, 'idle': 0, 'running': True}
    """

    kind = "spark"
    host_type = LocalHost
    launcher_type = SparkSubmitLauncher
    options = _options()
    launcher: SparkSubmitLauncher
    #: Spark's INFO lines (log4j's default layout): in the log, not in the live view.
    quiet_log = r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d INFO "

    @classmethod
    def compose(cls, config: dict[str, Any]) -> tuple[type[Host], type[Launcher]]:
        """This machine, or with ``host`` the SSH head node."""
        if config.get("host"):
            from jupyter_compute.targets.ssh import SSHHost

            if not config.get("master"):
                raise UsageError("--host runs spark-submit on a head node: give its cluster "
                                 "with --master spark://HOST:7077 (the embedded cluster is "
                                 "this machine's)")
            return SSHHost, SparkSubmitLauncher
        return LocalHost, SparkSubmitLauncher

    def describe(self) -> dict[str, Any]:
        found = super().describe()
        if self.launcher.embedded:
            cluster = self.launcher.cluster()
            state = cluster.load()
            found["cluster"] = state.master_url if state and cluster.running(state) \
                else "stopped"
        return found

    def job(self, run_id: str) -> dict[str, Any] | None:
        """The run's Spark application ``{id, state, ui_url}``; None before it has one."""
        return self.launcher.job_info(self.host, run_id)

    # -- the cluster -------------------------------------------------------------------

    def start(self) -> None:
        """Start the embedded cluster (a master and a worker; executors follow runs)."""
        self.launcher.check_options()
        if not self.launcher.embedded:
            raise UsageError(f"{self.name!r} is an existing Spark cluster at "
                             f"{self.config['master']}; start it with its own tooling")
        self.launcher.cluster().ensure()
        self.launcher.forget_nodes()

    def stop(self) -> None:
        """Stop the embedded cluster; only the JVMs it started (and theirs) are touched."""
        if not self.launcher.embedded:
            raise UsageError(f"{self.name!r} is an existing Spark cluster at "
                             f"{self.config['master']}; jupyter_compute does not stop it")
        self.launcher.cluster().stop()
        self.launcher.forget_nodes()

    def nodes(self) -> dict[str, Any]:
        """Executors ``{current, min, max, pending, idle, running}`` of the cluster's apps."""
        return self.launcher.nodes()
