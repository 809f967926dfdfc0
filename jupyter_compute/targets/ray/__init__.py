"""The ``ray`` kind: runs on an autoscaling Ray cluster, through the Ray Jobs API.

::

    %compute attach cpu-cluster --type ray --min-nodes 0 --max-nodes 4 --node-cpus 2 \\
        --idle-seconds 120                       # the embedded local cluster
    %compute attach big --type ray --address http://HEAD:8265   # an existing cluster
    %%submit --target cpu-cluster
    import train; train.main()

**Which cluster.** Without ``address`` the target owns an *embedded* cluster on this
machine (``cluster.py``): a Ray head and worker "nodes" that Ray's autoscaler
starts and removes as local processes, honouring ``min_nodes``, ``max_nodes``,
``node_cpus`` and ``idle_seconds``. It starts on first use or with ``start``, stops
with ``stop``, outlives the kernel, and any process reattaches to it through
``<ws>/.jupyter_compute/ray/<name>.json``. ``ephemeral`` makes a fresh one for each
run and removes it when the run ends. With ``address`` the target uses an existing
cluster (KubeRay, ``ray up``) and never starts or stops it.

**A run** is one Ray job whose entrypoint is our agent (``launcher.py``:
``RayJobLauncher``). Where its folder lives (``transport``) is the host:

- ``shared`` = ``LocalHost`` (the embedded cluster, or an address whose nodes are
  all this machine): the agent works in the workspace's run folder and reads the
  snapshot from the workspace's blob store; nothing is uploaded. Submit to first
  log line measured faster than any upload (see ``benchmarks/bench_ray.py``).
- ``job-log`` = ``JobLogHost`` (``host.py``; any other cluster): the run travels as
  the job's ``working_dir`` package and comes back inside the job's log.
- ``auto`` (the default): ``shared`` for the embedded cluster; for an address, the
  first submission of a target object asks the cluster where its nodes are, once.

The embedded cluster runs with Ray's token authentication (its GCS listens on
every interface; the dashboard on loopback only); its token is in the workspace
(``ray/<name>.token``, mode 600). For an existing cluster that uses tokens, set
``token_env`` to the name of a variable that holds the token.

A ``RayTarget`` object is safe to share across threads: what one submission knows
travels in its context, and what the parts cache (clients, Ray's answers, the
transport decided for ``auto``) is guarded by locks.
"""

from __future__ import annotations

import threading

from jupyter_compute.exceptions import UsageError
from jupyter_compute.targets.base import Cluster, Target
from jupyter_compute.targets.local import LocalHost
from jupyter_compute.targets.ray.host import JobLogHost
from jupyter_compute.targets.ray.jobs import node_counts
from jupyter_compute.targets.ray.launcher import RayJobLauncher, refuse_secrets

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.store import RunRecord
    from jupyter_compute.targets.base import Host, Launcher
    from jupyter_compute.targets.ray.cluster import EmbeddedCluster
    from jupyter_compute.workspace import Workspace

__all__ = ["RayTarget", "node_counts"]


class RayTarget(Target, Cluster):
    """Runs on a Ray cluster: the embedded local one, or one at ``address``.

    >>> attach("cpu-cluster", "ray", min_nodes=0, max_nodes=4, node_cpus=2)
    >>> run = submit("train.py", target="cpu-cluster")
    >>> get_target("cpu-cluster").nodes()
    {'current': 1, 'min': 0, 'max': 4, 'pending': 0, 'idle': 0, 'running': True}
    """

    kind = "ray"
    host_type = LocalHost
    launcher_type = RayJobLauncher
    options = RayJobLauncher.options
    launcher: RayJobLauncher
    rank_placement = "ray"  # a STRICT_SPREAD placement group, a node per bundle

    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        super().__init__(name, config, workspace)
        self._lock = threading.Lock()
        # "auto" with an address is settled by the first submission (see _settle_host).
        self._settled = not (self.config.get("address") and
                             (self.config.get("transport") or "auto") == "auto")

    @classmethod
    def compose(cls, config: dict[str, Any]) -> tuple[type[Host], type[Launcher]]:
        """``shared`` → ``LocalHost``, ``job-log`` → ``JobLogHost``. ``auto``: the embedded
        cluster is this machine; an address starts as ``JobLogHost``, which reads a
        shared run's folder as well, until a submission asks the cluster."""
        transport = config.get("transport") or "auto"
        if transport == "shared" or (transport == "auto" and not config.get("address")):
            return LocalHost, RayJobLauncher
        return JobLogHost, RayJobLauncher

    # -- the template, with the transport settled first --------------------------------

    def submit(self, spec: RunSpec) -> tuple[RunRecord, list[str]]:
        """Settle where runs go (``auto``), refuse what that place cannot carry, submit."""
        if isinstance(self._settle_host(), JobLogHost):
            refuse_secrets(self.name, spec)
        return super().submit(spec)

    def check_ranks(self, spec: RunSpec) -> None:
        super().check_ranks(spec)
        if spec.ranks is None:
            return
        if spec.distribution is not None and spec.distribution.type == "mpi":
            raise UsageError("distribution type mpi runs on local targets: on Ray the ranks "
                             "are placed by Ray, so use type pytorch or tensorflow")
        if self.launcher.embedded and \
                self.launcher.request()["CPU"] > self.launcher.shape().node_cpus:
            raise UsageError(f"each node of a multi-node run asks for run_cpus "
                             f"{self.config['run_cpus']:g}, more than a node of {self.name!r} "
                             f"has (node_cpus {self.launcher.shape().node_cpus}); lower "
                             "run_cpus or raise node_cpus")
        if isinstance(self._settle_host(), JobLogHost):
            raise UsageError(f"a multi-node run on {self.name!r} needs nodes that share this "
                             "machine's filesystem (transport shared): its ranks write to the "
                             "run folder")

    def max_nodes(self) -> int | None:
        if self.launcher.embedded:
            return self.launcher.shape().max_nodes
        limit = self.config.get("max_nodes")
        return int(limit) if limit is not None else None

    def _settle_host(self) -> Host:
        """The host for new runs; for ``auto`` with an address, decided once per object:
        ``LocalHost`` when every node of the cluster is this machine."""
        with self._lock:
            if not self._settled:
                self.launcher.check_options()
                nodes = self.launcher.client().nodes()
                ips = {str(n.get("node_ip")) for n in nodes}
                if ips and ips <= _local_addresses():
                    self.host = LocalHost(self.name, self.config, self.workspace)
                self._settled = True
            return self.host

    def describe(self) -> dict[str, Any]:
        found = super().describe()
        if self.launcher.embedded and not self.config.get("ephemeral"):
            cluster = self.cluster()
            state = cluster.load()
            found["cluster"] = state.address if state and cluster.running(state) \
                else "stopped"
        return found

    # -- the cluster -------------------------------------------------------------------

    def cluster(self) -> EmbeddedCluster:
        """The embedded cluster of this target (not an ephemeral one)."""
        return self.launcher.cluster()

    def start(self) -> None:
        """Start the embedded cluster's head (worker nodes follow demand)."""
        self.launcher.check_options()
        if not self.launcher.embedded:
            raise UsageError(f"{self.name!r} is an existing Ray cluster at "
                             f"{self.config['address']}; start it with its own tooling "
                             "(ray up, KubeRay)")
        if self.config.get("ephemeral"):
            raise UsageError(f"{self.name!r} is ephemeral: each run creates its own cluster")
        self.cluster().ensure()
        self.launcher.forget_nodes()

    def stop(self) -> None:
        """Stop the embedded cluster (its runs end); only its own processes are touched."""
        if not self.launcher.embedded:
            raise UsageError(f"{self.name!r} is an existing Ray cluster at "
                             f"{self.config['address']}; jupyter_compute does not stop it")
        for cluster in [self.cluster(), *self.launcher.ephemeral_clusters()]:
            cluster.stop(remove_files=cluster.ephemeral)
        self.launcher.forget_nodes()

    def nodes(self) -> dict[str, Any]:
        """Worker nodes ``{current, min, max, pending, idle, running}`` (head not counted);
        cached 1 s. ``min``/``max`` of an existing cluster are the ones given to ``attach``
        (None if not given). A stopped embedded cluster has 0 nodes."""
        return self.launcher.nodes()


def _local_addresses() -> set[str]:
    """This machine's addresses, as far as cheaply known (loopback, hostname, route)."""
    import socket

    from jupyter_compute.targets.ray.cluster import local_node_ip

    found = {"127.0.0.1", "::1", "localhost", local_node_ip()}
    try:
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    return found
