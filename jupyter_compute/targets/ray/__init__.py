"""The ``ray`` target: runs on an autoscaling Ray cluster, through the Ray Jobs API.

::

    %compute attach cpu-cluster --type ray --min-nodes 0 --max-nodes 4 --node-cpus 2 \\
        --idle-seconds 120                       # the embedded local cluster
    %compute attach big --type ray --address http://HEAD:8265   # an existing cluster
    %%submit --target cpu-cluster
    import train; train.main()

**Which cluster.** Without ``address`` the target owns an *embedded* cluster on this
machine (``_ray_cluster.py``): a Ray head and worker "nodes" that Ray's autoscaler
starts and removes as local processes, honouring ``min_nodes``, ``max_nodes``,
``node_cpus`` and ``idle_seconds``. It starts on first use or with ``start``, stops
with ``stop``, outlives the kernel, and any process reattaches to it through
``<ws>/.jupyter_compute/ray/<name>.json``. ``ephemeral`` makes a fresh one for each
run and removes it when the run ends. With ``address`` the target uses an existing
cluster (KubeRay, ``ray up``) and never starts or stops it.

**A run** is one Ray job whose entrypoint is our agent, run by an explicit
interpreter, so status, logs, metrics, outputs, max duration and cancel behave as on
every target. The job asks for ``run_cpus`` (default: ``node_cpus``, a whole node)
and ``run_memory``; Ray's autoscaler adds nodes for it. The job's ``RAY_ADDRESS``
reaches the script, so ``ray.init()`` inside a run joins the same cluster. How the
run folder travels (``transport``):

- ``shared`` (the embedded cluster, or an address whose nodes are all this
  machine): the agent works in the workspace's run folder and reads the snapshot
  from the workspace's blob store; nothing is uploaded. Submit to first log line
  measured faster than any upload (see ``benchmarks/bench_ray.py``).
- ``job-log`` (any other cluster): the snapshot's blobs, the runtime and a small
  entry script travel as the job's ``working_dir`` package (content-addressed, so
  an unchanged snapshot is uploaded once); the agent runs in a run folder on the
  node, and the log, metrics, status and outputs come back inside the job's log
  (``_ray_joblog.py``), rebuilt in the workspace's run folder as they arrive.
  Limits of that path: Ray serves a job's log only whole, so each poll (at most
  every 0.1 s per reader) fetches all of it; a log line shows once it ends with a
  newline; outputs come back when the run ends, up to 64 MiB compressed (larger
  ones stay on the node, and the log says where).

The embedded cluster runs with Ray's token authentication (its GCS listens on
every interface; the dashboard on loopback only); its token is in the workspace
(``ray/<name>.token``, mode 600). For an existing cluster that uses tokens, set
``token_env`` to the name of a variable that holds the token.

**Status.** Once the agent runs, its ``status.json`` is the truth. Before, Ray's
job state is mapped: ``PENDING`` → Preparing ("waiting for capacity: 0/1 nodes"),
``RUNNING`` without an agent yet → Preparing, a job that ended before the agent
started → Failed with Ray's message (Canceled if we asked). A request no node type
can hold fails as soon as Ray's autoscaler reports it infeasible (on a cluster
without an autoscaler: as soon as no node can hold it). A job that ended while the
agent's status was not terminal is "agent lost". Cancel touches the run's cancel
file and calls Ray's ``stop_job``, which signals the job's whole process tree.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.targets.base import HostFolderTarget, runtime_digest, runtime_files
from jupyter_compute.targets.ray.cluster import ClusterShape, EmbeddedCluster, ray_executable
from jupyter_compute.targets.ray.jobs import (
    PENDING,
    RUNNING,
    TERMINAL,
    ClusterUnreachableError,
    JobNotFoundError,
    JobsClient,
    normalize_address,
    token_from_env,
)

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.snapshot import Snapshot
    from jupyter_compute.store import RunRecord

__all__ = ["RayTarget", "node_counts", "parse_size"]

#: In the local run folder: where and how the run was submitted.
JOB_RECORD = "ray.json"
TRANSPORTS = ("auto", "shared", "job-log")
DEFAULTS = {"min_nodes": 0, "max_nodes": 2, "node_cpus": 1, "idle_seconds": 120,
            "node_type": "cpu"}
#: Ray is asked about a waiting job at most this often (per target object).
JOB_INFO_TTL = 0.25
INFEASIBLE_CHECK_SECONDS = 2.0
NODES_TTL = 1.0
#: The job log is fetched whole (Ray has no offsets): at most this often per run.
PULL_SECONDS = 0.1
_INFEASIBLE = re.compile(r"No available node types can fulfill resource request (\{.*?\})")


class RayTarget(HostFolderTarget):
    """Runs on a Ray cluster: the embedded local one, or one at ``address``.

    >>> attach("cpu-cluster", "ray", min_nodes=0, max_nodes=4, node_cpus=2)
    >>> run = submit("train.py", target="cpu-cluster")
    >>> get_target("cpu-cluster").nodes()
    {'current': 1, 'min': 0, 'max': 4, 'pending': 0, 'idle': 0}
    """

    kind = "ray"
    options = {
        "address": (str, "an existing cluster's dashboard, http://HEAD:8265 (default: the "
                         "embedded local cluster)"),
        "min_nodes": (int, "worker nodes kept when idle (default 0)"),
        "max_nodes": (int, "most worker nodes (default 2)"),
        "node_cpus": (int, "CPUs of a worker node; a run asks for as many unless run_cpus "
                           "is set (default 1)"),
        "node_memory": (str, "memory of a worker node, e.g. 4g (an existing cluster: a run "
                             "asks for as much)"),
        "idle_seconds": (int, "an idle worker node is removed after this long (default 120)"),
        "node_type": (str, "name of the worker node type (default cpu)"),
        "ephemeral": (bool, "create the cluster for one run and remove it after the run"),
        "python": (str, "interpreter on the nodes (default: this one on the embedded "
                        "cluster, python elsewhere)"),
        "run_cpus": (float, "CPUs a run asks for (default node_cpus)"),
        "run_memory": (str, "memory a run asks for, e.g. 2g (default: none)"),
        "transport": (str, "how run folders travel: auto, shared (same filesystem) or "
                           "job-log (through the job's working_dir and log)"),
        "token_env": (str, "NAME of an environment variable holding the cluster's token "
                           "(Ray token authentication)"),
    }

    def __init__(self, name: str, config: dict[str, Any], workspace: Any) -> None:
        super().__init__(name, config, workspace)
        self._client: JobsClient | None = None
        self._transport: str | None = None
        self._next_cluster: EmbeddedCluster | None = None  # prepare → launch (ephemeral)
        self._packages: dict[str, str] = {}  # run id → working_dir URI (job-log)
        self._info: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._checked: dict[str, float] = {}
        self._pulled: dict[str, float] = {}
        self._nodes: tuple[float, dict[str, Any]] | None = None

    # -- configuration ---------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when the target owns an embedded local cluster (no ``address``)."""
        return not self.config.get("address")

    def _opt(self, key: str) -> Any:
        value = self.config.get(key)
        return DEFAULTS.get(key) if value is None else value

    def shape(self) -> ClusterShape:
        """The embedded cluster's shape, from the target's options."""
        return ClusterShape(min_nodes=int(self._opt("min_nodes")),
                            max_nodes=int(self._opt("max_nodes")),
                            node_cpus=int(self._opt("node_cpus")),
                            node_memory=parse_size(self.config.get("node_memory")),
                            idle_seconds=float(self._opt("idle_seconds")),
                            node_type=str(self._opt("node_type")))

    def cluster(self) -> EmbeddedCluster:
        """The embedded cluster of this target (not an ephemeral one)."""
        return EmbeddedCluster(self.workspace.dir, self.name, self.shape())

    def request(self) -> dict[str, float]:
        """The resources each run asks Ray for: ``{"CPU": …, "memory": …}``."""
        cpus = self.config.get("run_cpus")
        req = {"CPU": float(cpus if cpus is not None else self._opt("node_cpus"))}
        memory = parse_size(self.config.get("run_memory"))
        if memory is None and not self.embedded:
            memory = parse_size(self.config.get("node_memory"))
        if memory and not self.embedded:
            # Ray's fake nodes cannot advertise memory, so the embedded cluster checks
            # it here (validate) instead of asking Ray for it.
            req["memory"] = float(memory)
        return req

    def _check_options(self) -> None:
        shape = self.shape()
        if shape.min_nodes < 0 or shape.max_nodes < max(shape.min_nodes, 1):
            raise UsageError(f"need 0 <= min_nodes <= max_nodes and max_nodes >= 1, got "
                             f"min_nodes={shape.min_nodes} max_nodes={shape.max_nodes}")
        if shape.node_cpus < 1:
            raise UsageError(f"node_cpus must be at least 1, got {shape.node_cpus}")
        if self.config.get("transport", "auto") not in TRANSPORTS:
            raise UsageError(f"transport must be one of {', '.join(TRANSPORTS)}, got "
                             f"{self.config['transport']!r}")
        parse_size(self.config.get("run_memory"))
        if self.config.get("ephemeral") and not self.embedded:
            raise UsageError("ephemeral applies to the embedded cluster; an existing cluster "
                             "(--address) is never created or removed by jupyter_compute")

    def client(self) -> JobsClient:
        """A client of the cluster's head (the embedded one must be running)."""
        if self._client is None:
            if self.embedded:
                self._client = self.cluster().client()
            else:
                self._client = JobsClient(normalize_address(self.config["address"]),
                                          token=token_from_env(self.config.get("token_env")))
        return self._client

    # -- hooks: before a run ---------------------------------------------------------

    def check(self) -> None:
        """Check the options; for an existing cluster, reach its head once."""
        self._check_options()
        if self.embedded:
            ray_executable()  # one clear line now if Ray is missing, not at the first run
        else:
            self.client().version()

    def validate(self, spec: RunSpec) -> None:
        if spec.docker_image:
            raise UsageError("a ray target runs no docker image; give the cluster's nodes the "
                             "environment, or use a docker target")
        if spec.node_count > 1:
            raise UsageError("node_count > 1 is not how a Ray run spreads: submit one run and "
                             "call ray.init() in it to fan tasks out across the cluster")
        memory = parse_size(self.config.get("run_memory"))
        node_memory = parse_size(self.config.get("node_memory"))
        if self.embedded and memory and node_memory and memory > node_memory:
            raise UsageError(f"run_memory {self.config['run_memory']} is more than a node has "
                             f"(node_memory {self.config['node_memory']}); lower run_memory or "
                             "raise node_memory")

    def prepare(self) -> None:
        self._check_options()
        if self.embedded:
            if self.config.get("ephemeral"):  # a cluster of its own for the coming run
                cluster = EmbeddedCluster(self.workspace.dir,
                                          f"{self.name}-eph-{os.urandom(3).hex()}",
                                          self.shape(), ephemeral=True)
            else:
                cluster = self.cluster()
            self._client = cluster.client(cluster.ensure())
            if cluster.ephemeral:
                self._next_cluster = cluster  # launch hands it to the reaper
            self._transport = self.config.get("transport") or "shared"
            if self._transport == "auto":
                self._transport = "shared"
        elif self._transport is None:
            self._transport = self._decide_transport()

    def _decide_transport(self) -> str:
        chosen = self.config.get("transport") or "auto"
        if chosen != "auto":
            self.client().version()
            return str(chosen)
        nodes = self.client().nodes()
        ips = {str(n.get("node_ip")) for n in nodes}
        # Every node is this machine: the agent there can use the workspace directly.
        return "shared" if ips and ips <= _local_addresses() else "job-log"

    def agent_spec(self, record: RunRecord, spec: RunSpec, snap: Snapshot) -> dict[str, Any]:
        agent = self.base_agent_spec(record, spec)
        if self._transport == "shared":
            run_dir = self.workspace.run_dir(record.id)
            agent.update(
                manifest=os.path.relpath(snap.manifest_path, run_dir),
                blobs=os.path.relpath(self.workspace.blobs_dir, run_dir),
                env_root=os.path.relpath(self.workspace.dir / "envs", run_dir),
                pythonpath=[os.path.relpath(self._runtime(), run_dir)],
            )
        return agent

    def sync(self, run_id: str, snap: Snapshot, agent_spec: dict[str, Any]) -> None:
        run_dir = self.workspace.run_dir(run_id)
        protocol.write_json_atomic(str(run_dir / protocol.SPEC), agent_spec)
        if self._transport == "job-log":
            try:
                self._packages[run_id] = self._upload(snap)
            except Exception:
                self._drop_next_cluster()
                raise

    def launch(self, run_id: str) -> None:
        try:
            self._launch(run_id)
        except Exception:
            self._drop_next_cluster()
            raise

    def _launch(self, run_id: str) -> None:
        run_dir = self.workspace.run_dir(run_id)
        request = self.request()
        python = self.config.get("python")
        runtime_env: dict[str, Any] = {}
        if self._transport == "shared":
            python = python or sys.executable
            agent = self._runtime() / "jupyter_compute" / "agent.py"
            entrypoint = shlex.join([python, str(agent), str(run_dir)])
        else:
            import base64

            from jupyter_compute.targets.ray import joblog as _ray_joblog

            payload = {"spec": protocol.read_json(str(run_dir / protocol.SPEC)),
                       "status": protocol.read_json(str(run_dir / protocol.STATUS))}
            runtime_env = {"working_dir": self._packages.pop(run_id), "env_vars": {
                _ray_joblog.SPEC_ENV: base64.b64encode(json.dumps(payload).encode()).decode()}}
            entrypoint = shlex.join([python or "python", _ray_joblog.ENTRY])
        client = self.client()
        cluster = self._next_cluster
        record = {"address": client.address, "submission_id": run_id,
                  "transport": self._transport, "request": request,
                  "submitted": time.time(), "cluster": cluster.name if cluster else
                  (self.name if self.embedded else None), "ephemeral": cluster is not None}
        protocol.write_json_atomic(str(run_dir / JOB_RECORD), record)
        client.submit(entrypoint, submission_id=run_id, runtime_env=runtime_env,
                      metadata={"jupyter_compute_run": run_id, "target": self.name},
                      entrypoint_num_cpus=request["CPU"],
                      entrypoint_memory=int(request["memory"]) if "memory" in request else None)
        if cluster is not None:  # the reaper removes the cluster once this run has ended
            subprocess.Popen([sys.executable, "-m", "jupyter_compute.targets.ray.cluster",
                              "reap", str(self.workspace.dir), cluster.name, str(run_dir),
                              run_id], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
            self._next_cluster = None

    def _drop_next_cluster(self) -> None:
        if self._next_cluster is not None:
            self._next_cluster.stop(remove_files=True)
            self._next_cluster = None

    def _runtime(self) -> Path:
        """The run-side runtime, written once per version into the workspace."""
        folder = self.workspace.dir / "runtime" / runtime_digest()
        package = folder / "jupyter_compute"
        if not (package / "__init__.py").exists():
            package.mkdir(parents=True, exist_ok=True)
            for name, data in sorted(runtime_files().items(),
                                     key=lambda kv: kv[0] == "__init__.py"):  # marker last
                tmp = package / f".{name}.{os.getpid()}"
                tmp.write_bytes(data)
                os.replace(tmp, package / name)
        return folder

    def _upload(self, snap: Snapshot) -> str:
        """The snapshot, runtime and entry script as a working_dir package in the cluster."""
        import hashlib

        from jupyter_compute.targets.ray import joblog as _ray_joblog

        entry = Path(_ray_joblog.__file__).read_bytes()
        key = hashlib.sha256(f"{runtime_digest()}\0{snap.id}\0".encode() + entry).hexdigest()
        uri = f"gcs://_ray_pkg_{key[:32]}.zip"
        client = self.client()
        if not client.package_exists(uri):
            client.upload_package(uri, _package_zip(snap, self.workspace.blobs_dir, entry))
        return uri

    # -- hooks: reading a run --------------------------------------------------------

    def read(self, run_id: str, name: str, offset: int = 0) -> bytes:
        if name == protocol.STATUS:
            data = json.dumps(self._status(run_id)).encode()
            return data[offset:] if offset else data
        if name in (protocol.LOG, protocol.METRICS):
            self._pull(run_id)  # a remote cluster's job log rebuilds the local folder
        return super().read(run_id, name, offset)

    def outputs_dir(self, run_id: str) -> Path:
        self._pull(run_id, force=True)
        return super().outputs_dir(run_id)

    def _record_of(self, run_id: str) -> dict[str, Any] | None:
        found = protocol.read_json(str(self.workspace.run_dir(run_id) / JOB_RECORD))
        return found if isinstance(found, dict) else None

    def _client_for(self, rec: dict[str, Any]) -> JobsClient:
        client = self._client
        if client is None or client.address != rec["address"]:
            if rec.get("cluster"):  # an embedded cluster: its token is in the workspace
                token = EmbeddedCluster(self.workspace.dir, rec["cluster"]).token()
            else:
                token = token_from_env(self.config.get("token_env"))
            client = JobsClient(rec["address"], token=token)
            if not rec.get("ephemeral"):
                self._client = client
        return client

    def _job(self, run_id: str, rec: dict[str, Any], ttl: float = JOB_INFO_TTL
             ) -> dict[str, Any] | None:
        """Ray's view of the run's job (cached ``ttl`` s); None when Ray does not know it.

        An unreachable head raises ``ClusterUnreachableError``.
        """
        hit = self._info.get(run_id)
        now = time.monotonic()
        if hit is not None and now - hit[0] < ttl:
            return hit[1]
        try:
            info: dict[str, Any] | None = self._client_for(rec).info(rec["submission_id"])
        except JobNotFoundError:
            info = None
        self._info[run_id] = (now, info)
        return info

    def _pull(self, run_id: str, force: bool = False) -> None:
        """Job-log transport: bring the run folder up to date from the job's log."""
        rec = self._record_of(run_id)
        if rec is None or rec.get("transport") != "job-log":
            return
        now = time.monotonic()
        if not force and now - self._pulled.get(run_id, 0.0) < PULL_SECONDS:
            return
        self._pulled[run_id] = now
        import fcntl

        from jupyter_compute.targets.ray.joblog import Mirror

        run_dir = self.workspace.run_dir(run_id)
        with open(run_dir / ".joblog.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            mirror = Mirror(str(run_dir))
            if mirror.ended:
                return
            client = self._client_for(rec)
            try:
                info = client.info(rec["submission_id"])
                text = client.logs(rec["submission_id"])
            except (JobNotFoundError, ClusterUnreachableError):
                return
            mirror.feed(text, final=info.get("status") in TERMINAL)

    def _status(self, run_id: str) -> dict[str, Any]:
        """status.json, with Ray's job state standing in until the agent reports."""
        self._pull(run_id)
        st = self._read_file_status(run_id)
        if RunStatus(st["status"]).is_terminal():
            return st
        rec = self._record_of(run_id)
        if rec is None:  # still being submitted
            return st
        cancel = (self.workspace.run_dir(run_id) / protocol.CANCEL).exists()
        if st.get("agent") and not cancel:
            return st  # the agent reports; alive() watches it
        try:
            info = self._job(run_id, rec)
        except ClusterUnreachableError:
            return st
        if info is None:
            if st.get("agent") and rec.get("transport") == "shared":
                return st  # alive() looks at the agent itself
            return self._end(run_id, st, RunStatus.FAILED,
                             f"the Ray job {rec['submission_id']} is gone from the cluster at "
                             f"{rec['address']} (it was stopped or restarted); submit again")
        state = info.get("status")
        if state in TERMINAL:
            if rec.get("transport") == "job-log":
                self._pull(run_id, force=True)
                st = self._read_file_status(run_id)
                if RunStatus(st["status"]).is_terminal():
                    return st
            if cancel:
                return self._end(run_id, st, RunStatus.CANCELED, "canceled by request"
                                 if st.get("agent") else "canceled before it started")
            if st.get("agent"):
                return st  # alive() is False now: base marks it "agent lost"
            return self._end(run_id, st, RunStatus.FAILED,
                             f"the Ray job ended {state} before the agent started: "
                             f"{_one_line(info.get('message'))}{self._job_log_hint(run_id, rec)}")
        if st.get("agent"):
            return st
        if cancel:  # Ray stops the job once it is placed; the run is over for us now
            return self._end(run_id, st, RunStatus.CANCELED, "canceled before it started")
        if state == PENDING:
            reason = self._infeasible(run_id, rec)
            if reason:
                st = self._end(run_id, st, RunStatus.FAILED, reason)
                try:
                    self._client_for(rec).stop(rec["submission_id"])
                except TargetError:
                    pass
                return st
            return {**st, "status": RunStatus.PREPARING.value,
                    "detail": self._waiting_detail()}
        if state == RUNNING:
            return {**st, "status": RunStatus.PREPARING.value,
                    "detail": "starting the agent on the node"}
        return st

    def _read_file_status(self, run_id: str) -> dict[str, Any]:
        st = protocol.read_json(str(self.workspace.run_dir(run_id) / protocol.STATUS))
        return st if isinstance(st, dict) and st.get("status") else \
            {"status": RunStatus.QUEUED.value}

    def _end(self, run_id: str, st: dict[str, Any], status: RunStatus,
             error: str) -> dict[str, Any]:
        now = protocol.utcnow()
        st = {**st, "status": status.value, "ended": now, "error": error}
        st.setdefault("history", []).append([status.value, now])
        self.write(run_id, protocol.STATUS, json.dumps(st, indent=1).encode())
        return st

    def _waiting_detail(self) -> str:
        detail = "waiting for capacity: 0/1 nodes"
        try:
            nodes = self.nodes() or {}
        except TargetError:
            return detail
        if nodes.get("pending"):
            detail += f" (the autoscaler is starting {nodes['pending']})"
        elif nodes.get("max") is not None and nodes.get("current", 0) >= nodes["max"]:
            detail += f" (all {nodes['max']} nodes busy)"
        return detail

    def _job_log_hint(self, run_id: str, rec: dict[str, Any]) -> str:
        try:
            text = self._client_for(rec).logs(rec["submission_id"])
        except TargetError:
            return ""
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return f" | {lines[-1][:200]}" if lines else ""

    def _infeasible(self, run_id: str, rec: dict[str, Any]) -> str | None:
        """Why Ray can never place this run, once Ray says so; None otherwise."""
        now = time.monotonic()
        if now - self._checked.get(run_id, 0.0) < INFEASIBLE_CHECK_SECONDS:
            return None
        self._checked[run_id] = now
        client = self._client_for(rec)
        want = {k: float(v) for k, v in rec["request"].items()}
        try:
            status = client.cluster_status()
            if not status.get("autoscalerReport"):
                # A monitor that has not reported yet (a fresh head) may still add nodes.
                if rec.get("cluster") or status.get("monitorPid") or \
                        time.time() - float(rec.get("submitted", 0)) < 10:
                    return None
                # No autoscaler: the cluster cannot grow, so no node that fits means never.
                nodes = client.nodes()
                if nodes and not any(_fits(want, n.get("resources_total") or {})
                                     for n in nodes):
                    biggest = max((n.get("resources_total") or {}).get("CPU", 0) for n in nodes)
                    return (f"Ray cannot place this run: it asks for {_fmt(want)} and no node "
                            f"of the cluster at {client.address} has that (largest: "
                            f"{biggest:g} CPUs), and it has no autoscaler; ask for less "
                            "(run_cpus, run_memory) or use bigger nodes")
                return None
            events = client.events()
        except TargetError:
            return None
        since = float(rec.get("submitted", 0)) - 60
        if rec.get("cluster"):  # an event from before the shape last changed says nothing
            config = EmbeddedCluster(self.workspace.dir, rec["cluster"]).config_path
            try:
                since = max(since, config.stat().st_mtime)
            except FileNotFoundError:
                pass
        for event in reversed(events):
            if event.get("sourceType", event.get("source_type")) != "AUTOSCALER" or \
                    float(event.get("timestamp") or 0) < since:
                continue
            match = _INFEASIBLE.search(str(event.get("message", "")))
            if match and _same_request(match.group(1), want):
                return (f"Ray cannot place this run: no node type of the cluster at "
                        f"{client.address} can provide {_fmt(want)} (Ray's autoscaler: no "
                        "available node types can fulfill it); ask for less (run_cpus, "
                        "run_memory) or give the cluster bigger nodes (node_cpus)")
        return None

    def alive(self, run_id: str, status: dict[str, Any]) -> bool:
        rec = self._record_of(run_id)
        if rec is None:  # launch has not written its record (yet)
            return _age(status.get("created")) < protocol.START_TIMEOUT
        ident = status.get("agent")
        if ident and rec.get("transport") == "shared":
            known = protocol.process_alive(ident)
            if known is not None:
                return known
            beat = self.workspace.run_dir(run_id) / protocol.HEARTBEAT
            try:
                return time.time() - beat.stat().st_mtime < protocol.HEARTBEAT_TIMEOUT
            except FileNotFoundError:
                pass
        if self._cluster_gone(rec):
            return False  # its embedded cluster is gone, and the job with it
        try:
            info = self._job(run_id, rec)
        except ClusterUnreachableError:
            return True  # cannot tell from here: a remote head may come back
        if info is None or info.get("status") in TERMINAL:
            self._pull(run_id, force=True)  # job-log: the final status may be in the log
            return False
        return True

    def _cluster_gone(self, rec: dict[str, Any]) -> bool:
        """Whether the embedded cluster that ran this job was stopped (or restarted)."""
        if not rec.get("cluster"):
            return False
        cluster = EmbeddedCluster(self.workspace.dir, rec["cluster"])
        state = cluster.load()
        return state is None or state.address != rec["address"] or not cluster.running(state)

    def request_cancel(self, run_id: str) -> None:
        (self.workspace.run_dir(run_id) / protocol.CANCEL).touch()
        rec = self._record_of(run_id)
        if rec is not None:
            try:  # Ray signals the job's whole process tree (SIGTERM, then SIGKILL)
                self._client_for(rec).stop(rec["submission_id"])
            except ClusterUnreachableError:
                pass
            self._info.pop(run_id, None)

    def abandon(self, run_id: str, status: dict[str, Any]) -> None:
        rec = self._record_of(run_id)
        if rec is not None:
            try:
                self._client_for(rec).stop(rec["submission_id"])
            except TargetError:
                pass

    # -- the cluster -----------------------------------------------------------------

    def start(self) -> None:
        """Start the embedded cluster's head (worker nodes follow demand)."""
        self._check_options()
        if not self.embedded:
            raise UsageError(f"{self.name!r} is an existing Ray cluster at "
                             f"{self.config['address']}; start it with its own tooling "
                             "(ray up, KubeRay)")
        if self.config.get("ephemeral"):
            raise UsageError(f"{self.name!r} is ephemeral: each run creates its own cluster")
        cluster = self.cluster()
        self._client = cluster.client(cluster.ensure())
        self._nodes = None

    def stop(self) -> None:
        """Stop the embedded cluster (its runs end); only its own processes are touched."""
        if not self.embedded:
            raise UsageError(f"{self.name!r} is an existing Ray cluster at "
                             f"{self.config['address']}; jupyter_compute does not stop it")
        for cluster in [self.cluster(), *self._ephemeral_clusters()]:
            cluster.stop(remove_files=cluster.ephemeral)
        self._client = None
        self._nodes = None

    def _ephemeral_clusters(self) -> list[EmbeddedCluster]:
        folder = self.workspace.dir / "ray"
        found = []
        for path in sorted(folder.glob(f"{self.name}-eph-*.json")):
            if path.name.endswith(".autoscaler.json"):
                continue
            found.append(EmbeddedCluster(self.workspace.dir, path.stem, self.shape(),
                                         ephemeral=True))
        return found

    def nodes(self) -> dict[str, Any] | None:
        """Worker nodes ``{current, min, max, pending, idle}`` (head not counted); cached 1 s.

        ``min``/``max`` of an existing cluster are the ones given to ``attach`` (None if
        not given). A stopped embedded cluster has 0 nodes.
        """
        now = time.monotonic()
        if self._nodes is not None and now - self._nodes[0] < NODES_TTL:
            return dict(self._nodes[1])
        if self.embedded:
            shape = self.shape()
            bounds = {"min": shape.min_nodes, "max": shape.max_nodes}
            clusters = [c for c in ([] if self.config.get("ephemeral") else [self.cluster()])
                        + self._ephemeral_clusters()]
            counts = {"current": 0, "pending": 0, "idle": 0}
            running = False
            for cluster in clusters:
                state = cluster.load()
                if state is None or not cluster.running(state):
                    continue
                running = True
                try:
                    found = node_counts(cluster.client(state, timeout=3).cluster_status())
                except TargetError:
                    continue
                for key in counts:
                    counts[key] += found.get(key) or 0
            result: dict[str, Any] = {**counts, **bounds, "running": running}
        else:
            client = self.client()
            status = client.cluster_status()
            result = node_counts(status, None if status.get("autoscalerReport")
                                 else client.nodes())
            result.update(min=self.config.get("min_nodes"), max=self.config.get("max_nodes"),
                          running=True)
        self._nodes = (now, result)
        return dict(result)

    def describe(self) -> dict[str, Any]:
        found = super().describe()
        if self.embedded and not self.config.get("ephemeral"):
            state = self.cluster().load()
            running = state is not None and self.cluster().running(state)
            found["cluster"] = state.address if running and state else "stopped"
        return found


# -- pure helpers ------------------------------------------------------------------------


def node_counts(cluster_status: dict[str, Any],
                nodes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Worker node counts from Ray's cluster status (or, without an autoscaler, its nodes).

    ``current``: worker nodes up; ``pending``: being launched; ``idle``: up with no CPU
    in use. The head is never counted.

    >>> node_counts({"autoscalerReport": {"activeNodes": {"ray.head.default": 1, "cpu": 2},
    ...              "pendingLaunches": {"cpu": 1}, "pendingNodes": []}})["current"]
    2
    """
    report = cluster_status.get("autoscalerReport") or {}
    load = cluster_status.get("loadMetricsReport") or {}
    if report:
        active = report.get("activeNodes") or {}
        current = max(0, sum(int(v) for v in active.values()) - 1)  # less the head
        pending = sum(int(v) for v in (report.get("pendingLaunches") or {}).values()) + \
            len(report.get("pendingNodes") or [])
        idle = 0
        for usage in (load.get("usageByNode") or {}).values():
            if "node:InternalHead" in usage or "node:__internal_head__" in usage:
                continue
            used = (usage.get("CPU") or [0.0, 0.0])[0]
            idle += 1 if not used else 0
        return {"current": current, "pending": pending, "idle": min(idle, current)}
    workers = [n for n in (nodes or []) if not n.get("is_head_node")]
    return {"current": len(workers), "pending": 0, "idle": None}


def parse_size(text: Any) -> int | None:
    """``"4g"`` → 4 GiB in bytes (k, m, g, t; ``i`` and ``b`` optional); None stays None.

    >>> parse_size("512m"), parse_size("4g"), parse_size(1024)
    (536870912, 4294967296, 1024)
    """
    if text is None or text == "":
        return None
    if isinstance(text, (int, float)):
        return int(text)
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", str(text).lower())
    if not match:
        raise UsageError(f"invalid size {text!r}: use a number with k, m, g or t, e.g. 4g")
    scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2)]
    return int(float(match.group(1)) * scale)


def _fits(want: dict[str, float], total: dict[str, Any]) -> bool:
    return all(float(total.get(k, 0)) >= v for k, v in want.items())


def _same_request(text: str, want: dict[str, float]) -> bool:
    import ast

    try:
        found = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return False
    return isinstance(found, dict) and \
        {k: float(v) for k, v in found.items()} == want


def _fmt(want: dict[str, float]) -> str:
    parts = [f"{v:g} CPUs" if k == "CPU" else f"{v / 2**30:.1f} GiB memory" if k == "memory"
             else f"{v:g} {k}" for k, v in want.items()]
    return ", ".join(parts)


def _one_line(text: Any) -> str:
    lines = [line.strip() for line in str(text or "").strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def _age(iso: str | None) -> float:
    if not iso:
        return 0.0
    from datetime import datetime

    return time.time() - datetime.fromisoformat(iso).timestamp()


def _local_addresses() -> set[str]:
    """This machine's addresses, as far as cheaply known (loopback, hostname, route)."""
    import socket

    found = {"127.0.0.1", "::1", "localhost"}
    try:
        found.update(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    from jupyter_compute.targets.ray.cluster import _node_ip

    found.add(_node_ip())
    return found


def _package_zip(snap: Snapshot, blobs_dir: Path, entry: bytes) -> bytes:
    """A deterministic zip: runtime, entry script, the snapshot's manifest and blobs."""
    import io
    import zipfile

    from jupyter_compute.targets.ray.joblog import ENTRY

    files: dict[str, bytes] = {f"jupyter_compute/{n}": d for n, d in runtime_files().items()}
    files[ENTRY] = entry
    files["snapshot/manifest.json"] = Path(snap.manifest_path).read_bytes()
    for digest, _size, _mode in snap.files.values():
        name = f"snapshot/blobs/sha256/{digest[:2]}/{digest}"
        if name not in files:
            files[name] = (blobs_dir / "sha256" / digest[:2] / digest).read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, files[name])
    return buf.getvalue()
