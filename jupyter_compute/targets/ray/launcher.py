"""How a run starts on Ray: one Ray job whose entrypoint is the agent (``RayJobLauncher``).

The job asks for ``run_cpus`` (default: ``node_cpus``, a whole node) and
``run_memory``; Ray's autoscaler adds nodes for it. The job's ``RAY_ADDRESS``
reaches the script, so ``ray.init()`` inside a run joins the same cluster. On a
shared filesystem (``LocalHost``) the entrypoint is the agent (``protocol.agent_command``) on
the workspace's run folder; on a ``JobLogHost`` it is the entry script of the
uploaded package, with the run's spec in the job's environment.

**Status.** Once the agent runs, its ``status.json`` is the truth. Before, Ray's
job state stands in (``alive``): ``PENDING`` → Preparing ("waiting for 1 node
(pending 1)"), ``RUNNING`` without an agent yet → Preparing, a job that ended before
the agent started → Failed with Ray's message (Canceled if we asked). A request no
node type can hold fails as soon as Ray's autoscaler reports it infeasible (on a
cluster without an autoscaler: as soon as no node can hold it). A job that ended
while the agent's status was not terminal is "agent lost". Cancel is Ray's
``stop_job``, which signals the job's whole process tree.

**Secrets.** No value of the run's environment goes into the job's ``runtime_env``
or metadata, which Ray shows in its dashboard and job info: on a shared filesystem
the agent reads them from the run folder. A job-log node has no other channel, so a
run with secret-looking variables is refused there (``refuse_secrets``).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time

from jupyter_compute import protocol, units
from jupyter_compute.exceptions import TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runspec import secret_names
from jupyter_compute.targets.base import Launcher
from jupyter_compute.targets.ray.cluster import ClusterShape, EmbeddedCluster, ray_executable
from jupyter_compute.targets.ray.host import CLIENT, PACKAGE, JobLogHost
from jupyter_compute.targets.ray.jobs import (
    PENDING,
    RUNNING,
    TERMINAL,
    ClusterUnreachableError,
    JobNotFoundError,
    JobsClient,
    node_counts,
    normalize_address,
    token_from_env,
)
from jupyter_compute.targets.ray.submission import JOB_RECORD, Clients, job_record
from jupyter_compute.targets.runtime import install_runtime

#: ``ctx.scratch`` key: the requirement lines Ray's runtime_env installs (remote clusters).
RAY_PIP = "ray_pip"

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.targets.base import Host, SubmitContext
    from jupyter_compute.workspace import Workspace

TRANSPORTS = ("auto", "shared", "job-log")
DEFAULTS = {"min_nodes": 0, "max_nodes": 2, "node_cpus": 1, "idle_seconds": 120,
            "node_type": "cpu"}
#: Ray is asked about a waiting job at most this often (per target object).
JOB_INFO_TTL = 0.25
INFEASIBLE_CHECK_SECONDS = 2.0
NODES_TTL = 1.0
#: ``ctx.scratch`` keys: the embedded cluster the run goes to, and whether it is the
#: run's own (ephemeral).
CLUSTER, EPHEMERAL = "ray_cluster", "ray_ephemeral"
_INFEASIBLE = re.compile(r"No available node types can fulfill resource request (\{.*?\})")
#: Ray dropped the job before anything of it ran: its supervisor actor was cancelled
#: (the node it was placed on was scaled away at that moment). Submitted again this often.
_NEVER_RAN = re.compile(r"actor never ran|cancelled before it started", re.IGNORECASE)
RESUBMITS = 2


class RayJobLauncher(Launcher):
    """The agent as a Ray job on the target's cluster: the embedded one, or ``address``."""

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

    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        super().__init__(name, config, workspace)
        self.clients = Clients(workspace, config)
        # Caches of what Ray said, shared by the threads that use this target.
        self._lock = threading.Lock()
        self._info: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._checked: dict[str, float] = {}
        self._nodes: tuple[float, dict[str, Any]] | None = None

    # -- the target's options ----------------------------------------------------------

    @property
    def embedded(self) -> bool:
        """True when the target owns an embedded local cluster (no ``address``)."""
        return not self.config.get("address")

    def opt(self, key: str) -> Any:
        """Option ``key``, or its default."""
        value = self.config.get(key)
        return DEFAULTS.get(key) if value is None else value

    def shape(self) -> ClusterShape:
        """The embedded cluster's shape, from the target's options."""
        return ClusterShape(min_nodes=int(self.opt("min_nodes")),
                            max_nodes=int(self.opt("max_nodes")),
                            node_cpus=int(self.opt("node_cpus")),
                            node_memory=units.parse_size_option(self.config.get("node_memory"),
                                                                 "--node-memory"),
                            idle_seconds=float(self.opt("idle_seconds")),
                            node_type=str(self.opt("node_type")))

    def cluster(self) -> EmbeddedCluster:
        """The embedded cluster of this target (not an ephemeral one)."""
        return EmbeddedCluster(self.workspace.dir, self.name, self.shape())

    def ephemeral_clusters(self) -> list[EmbeddedCluster]:
        """The ephemeral clusters of this target's runs that are (still) recorded."""
        found = []
        for path in sorted((self.workspace.dir / "ray").glob(f"{self.name}-eph-*.json")):
            if not path.name.endswith(".autoscaler.json"):
                found.append(EmbeddedCluster(self.workspace.dir, path.stem, self.shape(),
                                             ephemeral=True))
        return found

    def request(self) -> dict[str, float]:
        """The resources each run asks Ray for: ``{"CPU": …, "memory": …}``."""
        cpus = self.config.get("run_cpus")
        req = {"CPU": float(cpus if cpus is not None else self.opt("node_cpus"))}
        memory = units.parse_size_option(self.config.get("run_memory"), "--run-memory")
        if memory is None and not self.embedded:
            memory = units.parse_size_option(self.config.get("node_memory"),
                                             "--node-memory")
        if memory and not self.embedded:
            # Ray's fake nodes cannot advertise memory, so the embedded cluster checks
            # it here (validate) instead of asking Ray for it.
            req["memory"] = float(memory)
        return req

    def check_options(self) -> None:
        """One clear line for options that cannot work together."""
        shape = self.shape()
        if shape.min_nodes < 0 or shape.max_nodes < max(shape.min_nodes, 1):
            raise UsageError(f"need 0 <= min_nodes <= max_nodes and max_nodes >= 1, got "
                             f"min_nodes={shape.min_nodes} max_nodes={shape.max_nodes}")
        if shape.node_cpus < 1:
            raise UsageError(f"node_cpus must be at least 1, got {shape.node_cpus}")
        if self.config.get("transport", "auto") not in TRANSPORTS:
            raise UsageError(f"transport must be one of {', '.join(TRANSPORTS)}, got "
                             f"{self.config['transport']!r}")
        units.parse_size_option(self.config.get("run_memory"), "--run-memory")
        if self.config.get("ephemeral") and not self.embedded:
            raise UsageError("ephemeral applies to the embedded cluster; an existing cluster "
                             "(--address) is never created or removed by jupyter_compute")

    def client(self) -> JobsClient:
        """A client of the target's cluster (the embedded one must be running)."""
        if self.embedded:
            cluster = self.cluster()
            state = cluster.load()
            if state is None:
                return cluster.client()  # raises: not running, and how to start it
            return self.clients.get(state.address, cluster.token())
        return self.clients.get(normalize_address(self.config["address"]),
                                token_from_env(self.config.get("token_env")))

    # -- hooks: before a run -----------------------------------------------------------

    def validate(self, spec: RunSpec) -> None:
        if spec.docker_image:
            raise UsageError("a ray target runs no docker image; give the cluster's nodes the "
                             "environment, or use a docker target")
        memory = units.parse_size_option(self.config.get("run_memory"), "--run-memory")
        node_memory = units.parse_size_option(self.config.get("node_memory"),
                                              "--node-memory")
        if self.embedded and memory and node_memory and memory > node_memory:
            raise UsageError(f"run_memory {self.config['run_memory']} is more than a node has "
                             f"(node_memory {self.config['node_memory']}); lower run_memory or "
                             "raise node_memory")

    def check(self, host: Host) -> None:
        """Check the options; for an existing cluster, reach its head once."""
        self.check_options()
        if self.embedded:
            ray_executable()  # one clear line now if Ray is missing, not at the first run
        else:
            self.client().version()

    def prepare(self, host: Host) -> None:
        self.check_options()
        if self.embedded and not self.config.get("ephemeral"):
            self.cluster().ensure()  # started on first use; a no-op while it runs

    def agent_spec(self, host: Host, ctx: SubmitContext) -> None:
        if ctx.agent.get("ranks"):  # a bundle per node of the placement group (ranks_ray)
            ctx.agent["ranks"]["bundle"] = self.request()
        if not isinstance(host, JobLogHost):  # the agent runs from the runtime folder
            ctx.agent["pythonpath"] = [str(install_runtime(self.workspace.dir))]
            return  # the nodes share this disk: the agent builds the environment there
        env = ctx.environment
        if env and env.get("venv") and not env.get("wheels") and not env.get("python"):
            # A remote cluster: Ray's own runtime_env installs the packages on whichever
            # node runs the job (and caches them); the agent only says so.
            ctx.scratch[RAY_PIP] = list(env.get("requirements") or [])
            ctx.agent["environment"] = {**env, "provided": "installed by Ray's runtime_env "
                                                           "(pip) on the node"}

    def sync(self, host: Host, ctx: SubmitContext) -> None:
        """Pick the run's cluster (an ephemeral one is started now) and its client."""
        if self.embedded and self.config.get("ephemeral"):
            cluster = EmbeddedCluster(self.workspace.dir,
                                      f"{self.name}-eph-{os.urandom(3).hex()}",
                                      self.shape(), ephemeral=True)
            try:
                state = cluster.ensure()
            except BaseException:
                cluster.stop(remove_files=True)
                raise
            # From now on the reaper removes the cluster once the run has ended, or
            # once this submission has failed or died before launching it.
            subprocess.Popen([sys.executable, "-m", "jupyter_compute.targets.ray.cluster",
                              "reap", str(self.workspace.dir), cluster.name,
                              str(self.workspace.run_dir(ctx.run_id)), ctx.run_id],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
            ctx.scratch.update({CLUSTER: cluster.name, EPHEMERAL: True,
                                CLIENT: cluster.client(state)})
        else:
            ctx.scratch.update({CLUSTER: self.name if self.embedded else None,
                                EPHEMERAL: False, CLIENT: self.client()})

    def launch(self, host: Host, ctx: SubmitContext) -> None:
        run_dir = self.workspace.run_dir(ctx.run_id)
        # A multi-node run's agent asks for nothing (it runs on the head); its placement
        # group asks for the nodes (ranks_ray.py).
        request = {"CPU": 0.0} if ctx.agent.get("ranks") else self.request()
        python = self.config.get("python")
        runtime_env: dict[str, Any] = {}
        if isinstance(host, JobLogHost):
            import jupyter_compute.targets.ray.joblog as joblog

            runtime_env = {"working_dir": ctx.scratch[PACKAGE],
                           "env_vars": {joblog.SPEC_ENV: job_log_payload(
                               ctx, protocol.read_json(str(run_dir / protocol.STATUS)) or {})}}
            if ctx.scratch.get(RAY_PIP) is not None:
                runtime_env["pip"] = {"packages": ctx.scratch[RAY_PIP], "pip_check": False}
            entrypoint = shlex.join([python or "python", joblog.ENTRY])
        else:
            entrypoint = shlex.join(protocol.agent_command(
                python or sys.executable, str(install_runtime(self.workspace.dir)),
                str(run_dir)))
        client: JobsClient = ctx.scratch[CLIENT]
        shared = not isinstance(host, JobLogHost)
        protocol.write_json_atomic(str(run_dir / JOB_RECORD), {
            "address": client.address, "submission_id": ctx.run_id,
            "transport": "shared" if shared else "job-log",
            "request": request, "submitted": time.time(), "cluster": ctx.scratch[CLUSTER],
            "ephemeral": ctx.scratch[EPHEMERAL],
            # what any reader needs to submit it again (shared: nothing secret in it)
            "entrypoint": entrypoint if shared else None})
        self._submit(client, ctx.run_id, ctx.run_id, entrypoint, runtime_env, request)

    def _submit(self, client: JobsClient, run_id: str, submission_id: str, entrypoint: str,
                runtime_env: dict[str, Any], request: dict[str, Any]) -> None:
        client.submit(entrypoint, submission_id=submission_id, runtime_env=runtime_env,
                      metadata={"jupyter_compute_run": run_id, "target": self.name},
                      entrypoint_num_cpus=request["CPU"],
                      entrypoint_memory=int(request["memory"]) if "memory" in request else None)

    def _resubmit(self, run_id: str, rec: dict[str, Any], info: dict[str, Any] | None,
                  cancel: bool) -> bool:
        """Submit a job again that Ray dropped before any of it ran; True if it now runs.

        Only for the shared transport (the agent writes the run folder itself, so a new
        job simply picks it up), a few times, and by one reader: the record is rewritten
        under a lock, and a reader that finds it rewritten already just follows it.
        """
        if cancel or info is None or rec.get("transport") != "shared" or \
                rec.get("ephemeral") or not rec.get("entrypoint") or \
                not _NEVER_RAN.search(str(info.get("message") or "")):
            return False
        import fcntl

        path = self.workspace.run_dir(run_id) / JOB_RECORD
        with open(path.with_name(f".{JOB_RECORD}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = job_record(self.workspace, run_id) or rec
            if now.get("submission_id") != rec.get("submission_id"):
                return True  # another reader submitted it again already
            attempt = int(now.get("attempt", 0)) + 1
            if attempt > RESUBMITS:
                return False
            submission_id = f"{run_id}-retry{attempt}"
            try:
                self._submit(self.clients.for_record(now), run_id, submission_id,
                             now["entrypoint"], {}, now["request"])
            except TargetError:
                return False
            protocol.write_json_atomic(str(path), {**now, "submission_id": submission_id,
                                                   "attempt": attempt})
        with self._lock:
            self._info.pop(run_id, None)
        return True

    # -- hooks: a run that was launched ----------------------------------------------

    def alive(self, host: Host, run_id: str, status: dict[str, Any]) -> bool | None:
        """Ray's job state, until the agent reports (see the module's **Status**).

        A run still waiting for Ray is alive, and ``status`` (what the reader gets) shows
        it as Preparing with a ``detail``; a run Ray ended before its agent started is
        ended here, with Ray's reason, and False returned (the template then re-reads
        the terminal status instead of calling it lost).
        """
        rec = job_record(self.workspace, run_id)
        if rec is None:
            return None  # not launched yet: the submitting client's beat decides
        agent = status.get("agent")
        if agent and rec.get("transport") == "shared":
            return None  # the agent runs here: its pid decides, no need to ask Ray
        if self._cluster_gone(rec):
            if not agent:
                self._end(host, run_id, RunStatus.FAILED,
                          f"the embedded Ray cluster {rec['cluster']!r} was stopped before "
                          "the run's agent started; submit it again")
            return False
        try:
            info = self._job(run_id, rec)
        except ClusterUnreachableError:
            if not agent:  # submitted, so at least Preparing (a status only moves forward)
                status.update(status=RunStatus.PREPARING.value,
                              detail=f"the Ray head at {rec['address']} does not answer")
            return True  # cannot tell from here: a remote head may come back
        cancel = (self.workspace.run_dir(run_id) / protocol.CANCEL).exists()
        if info is None or info.get("status") in TERMINAL:
            host.finish(run_id)  # job-log: the final status may be in the log
            if not _read_status(host, run_id).get("agent"):
                if self._resubmit(run_id, rec, info, cancel):
                    status.update(status=RunStatus.PREPARING.value,
                                  detail="Ray dropped the job before it ran (its node went "
                                         "away); submitted it again")
                    return True
                self._end(host, run_id, *self._why_ended(run_id, rec, info, cancel))
            return False  # with an agent that did not end the run: "agent lost"
        if agent:
            return True  # job-log: Ray runs the job, the agent reports through its log
        if cancel:  # stop_job was called: Ray ends the job once it is placed
            self._end(host, run_id, RunStatus.CANCELED, "canceled before it started")
            return False
        if info.get("status") == PENDING:
            reason = self._infeasible(run_id, rec)
            if reason:
                self._end(host, run_id, RunStatus.FAILED, reason)
                self._stop(rec)
                return False
            status.update(status=RunStatus.PREPARING.value, detail=self._waiting_detail())
        else:
            status.update(status=RunStatus.PREPARING.value,
                          detail="starting the agent on the node" if info.get("status") ==
                          RUNNING else f"the Ray job is {info.get('status')}")
        return True

    def cancel(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        """Ray's ``stop_job``: SIGTERM to the job's process tree, SIGKILL after a grace."""
        rec = job_record(self.workspace, run_id)
        if rec is not None:
            try:
                self._stop(rec, quiet=False)
            except ClusterUnreachableError:
                pass
        with self._lock:
            self._info.pop(run_id, None)

    def ended(self, host: Host, run_id: str, status: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._info.pop(run_id, None)
            self._checked.pop(run_id, None)
        return status

    def abandon(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        super().abandon(host, run_id, status)
        rec = job_record(self.workspace, run_id)
        if rec is not None:
            self._stop(rec)

    # -- the cluster's nodes -----------------------------------------------------------

    def nodes(self, max_age: float = NODES_TTL) -> dict[str, Any]:
        """Worker nodes ``{current, min, max, pending, idle, running}`` (head not counted),
        as Ray said at most ``max_age`` seconds ago."""
        now = time.monotonic()
        with self._lock:
            if self._nodes is not None and now - self._nodes[0] < max_age:
                return dict(self._nodes[1])
        if self.embedded:
            shape = self.shape()
            own = [] if self.config.get("ephemeral") else [self.cluster()]
            counts = {"current": 0, "pending": 0, "idle": 0}
            running = False
            for cluster in own + self.ephemeral_clusters():
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
            result: dict[str, Any] = {**counts, "min": shape.min_nodes,
                                      "max": shape.max_nodes, "running": running}
        else:
            client = self.client()
            status = client.cluster_status()
            result = node_counts(status, None if status.get("autoscalerReport")
                                 else client.nodes())
            result.update(min=self.config.get("min_nodes"), max=self.config.get("max_nodes"),
                          running=True)
        with self._lock:
            self._nodes = (now, result)
        return dict(result)

    def forget_nodes(self) -> None:
        """Drop the cached node counts (the cluster was started or stopped)."""
        with self._lock:
            self._nodes = None

    # -- pieces ------------------------------------------------------------------------

    def _job(self, run_id: str, rec: dict[str, Any]) -> dict[str, Any] | None:
        """Ray's view of the run's job (cached ``JOB_INFO_TTL``); None when Ray does not
        know it. An unreachable head raises ``ClusterUnreachableError``."""
        now = time.monotonic()
        with self._lock:
            hit = self._info.get(run_id)
        if hit is not None and now - hit[0] < JOB_INFO_TTL:
            return hit[1]
        try:
            info: dict[str, Any] | None = self.clients.for_record(rec).info(
                rec["submission_id"])
        except JobNotFoundError:
            info = None
        with self._lock:
            self._info[run_id] = (now, info)
        return info

    def _stop(self, rec: dict[str, Any], quiet: bool = True) -> None:
        try:
            self.clients.for_record(rec).stop(rec["submission_id"])
        except TargetError:
            if not quiet:
                raise

    def _end(self, host: Host, run_id: str, status: RunStatus, error: str) -> None:
        """End a run whose agent never started, unless it has ended (or started) since."""
        st = _read_status(host, run_id)
        if st.get("agent") or st.get("status") in protocol.TERMINAL_STATUSES:
            return
        now = protocol.utcnow()
        st.update(status=status.value, ended=now, exit_code=None, error=error)
        st.setdefault("history", []).append([status.value, now])
        host.write(run_id, protocol.STATUS, json.dumps(st, indent=1).encode())

    def _why_ended(self, run_id: str, rec: dict[str, Any], info: dict[str, Any] | None,
                   cancel: bool) -> tuple[RunStatus, str]:
        if cancel:
            return RunStatus.CANCELED, "canceled before it started"
        if info is None:
            return RunStatus.FAILED, (f"the Ray job {rec['submission_id']} is gone from the "
                                      f"cluster at {rec['address']} (it was stopped or "
                                      "restarted); submit again")
        return RunStatus.FAILED, (f"the Ray job ended {info.get('status')} before the agent "
                                  f"started: {_one_line(info.get('message'))}"
                                  f"{self._job_log_hint(rec)}")

    def _cluster_gone(self, rec: dict[str, Any]) -> bool:
        """Whether the embedded cluster that ran this job was stopped (or restarted)."""
        if not rec.get("cluster"):
            return False
        cluster = EmbeddedCluster(self.workspace.dir, rec["cluster"])
        state = cluster.load()
        return state is None or state.address != rec["address"] or not cluster.running(state)

    def _waiting_detail(self) -> str:
        """``waiting for 1 node (pending 1)``: what the run waits for, as Ray says now."""
        detail = "waiting for 1 node"
        try:
            nodes = self.nodes(max_age=0.5)
        except TargetError:
            return detail
        if nodes.get("pending"):
            detail += f" (pending {nodes['pending']})"
        elif nodes.get("max") is not None and nodes.get("current", 0) >= nodes["max"]:
            detail += f" (all {nodes['max']} nodes busy)"
        else:
            detail += " (asking the autoscaler)"
        return detail

    def _job_log_hint(self, rec: dict[str, Any]) -> str:
        try:
            text = self.clients.for_record(rec).logs(rec["submission_id"])
        except TargetError:
            return ""
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return f" | {lines[-1][:200]}" if lines else ""

    def _infeasible(self, run_id: str, rec: dict[str, Any]) -> str | None:
        """Why Ray can never place this run, once Ray says so; None otherwise."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked.get(run_id, 0.0) < INFEASIBLE_CHECK_SECONDS:
                return None
            self._checked[run_id] = now
        client = self.clients.for_record(rec)
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


# -- secrets on the job-log path ---------------------------------------------------------


def refuse_secrets(target: str, spec: RunSpec) -> None:
    """A job-log run cannot carry secrets (see ``job_log_payload``): refuse it, in one line."""
    names = secret_names(spec)  # TOKEN, PASSWORD, SECRET, KEY … or named in secret_env
    if names:
        raise UsageError(f"target {target!r} sends runs through Ray's job log, where "
                         f"environment variables show in the Ray dashboard: "
                         f"{', '.join(names)} look secret; set them on the cluster's nodes "
                         "instead (or run where the nodes share this filesystem)")


def job_log_payload(ctx: SubmitContext, status: dict[str, Any]) -> str:
    """The run's spec and status for the node's entry script, base64 JSON for the job's
    ``env_vars`` (``joblog.SPEC_ENV``).

    Secrets payload: there is none. Ray shows a job's runtime env in its dashboard and
    job info, and a job-log node shares no file with this machine, so no channel here
    keeps a value secret; the target refuses runs with secret-looking variables before
    anything is written (``refuse_secrets``). The package is no place for them either:
    it is content-addressed and shared by every run of a snapshot.
    """
    import base64

    payload = {"spec": ctx.agent, "status": status}
    return base64.b64encode(json.dumps(payload).encode()).decode()


# -- pure helpers ------------------------------------------------------------------------


def _read_status(host: Host, run_id: str) -> dict[str, Any]:
    try:
        st = json.loads(host.read(run_id, protocol.STATUS) or b"null")
    except ValueError:
        st = None
    return st if isinstance(st, dict) and st.get("status") else \
        {"status": RunStatus.QUEUED.value}


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
