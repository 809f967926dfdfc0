"""The sbatch launcher: a run is one Slurm batch job that runs the agent in the run folder.

``launch`` pipes ``batch_script`` into ``sbatch --parsable`` on the host (this machine
or the login node) with the options of ``sbatch_options``, and keeps the job's id in
``slurm.json`` of the local run folder. Until the agent has started, Slurm's word is
the run's: PENDING is Queued with its reason, CONFIGURING is Queued "waiting for a
node to power up", RUNNING is Preparing; a job that ends before its agent ran ends
the run with Slurm's state (``end_state``). Once the agent runs, its pid and status
decide, as on every host. Cancel is ``scancel``: Slurm signals every process of the
job, then kills what is left after its KillWait.

Job states come from ``squeue --states=all`` (no slurmdbd needed; finished jobs stay
visible for MinJobAge), cached for ``JOB_TTL`` seconds per run. A miss asks about every
run submitted or read in the last ``WATCHED_SECONDS`` in the same call: a sweep's
pending array tasks cost one ``squeue`` a second, not one each.
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import sys
import threading
import time

from jupyter_compute import protocol
from jupyter_compute.exceptions import TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.targets.base import Launcher

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.targets.base import Host, SubmitContext
    from jupyter_compute.targets.slurm.cluster import EmbeddedSlurm
    from jupyter_compute.workspace import Workspace

#: Tells the agent it runs as a Slurm job (agent.SLURM_JOB_ENV; not imported: the agent
#: module is the runtime's, heavy to import here).
SLURM_JOB_ENV = "JUPYTER_COMPUTE_SLURM_JOB"
#: In the local run folder: the run's Slurm job (id, array task, cluster).
JOB_RECORD = "slurm.json"
#: In the run folder on the host: what the batch job itself printed (the agent's crash).
JOB_OUTPUT = "slurm-job.out"
JOB_TTL = 1.0
WATCHED_SECONDS = 10.0
NODES_TTL = 1.0
#: A job's time limit is the run's own plus this, so the agent ends it TimedOut first.
TIME_MARGIN = 30
#: The run's own cancel grace, at most, within the job: Slurm's KillWait does the rest.
POWER_UP = "waiting for a node to power up"

#: Slurm's end states (squeue's long names) → the run's status and words.
END_STATES: dict[str, tuple[RunStatus, str]] = {
    "COMPLETED": (RunStatus.FAILED, "the Slurm job completed without its agent reporting"),
    "FAILED": (RunStatus.FAILED, "the Slurm job failed"),
    "TIMEOUT": (RunStatus.TIMED_OUT, "the Slurm job reached its time limit"),
    "CANCELLED": (RunStatus.CANCELED, "the Slurm job was canceled"),
    "NODE_FAIL": (RunStatus.FAILED, "the Slurm job's node failed"),
    "OUT_OF_MEMORY": (RunStatus.FAILED, "the Slurm job ran out of memory"),
    "PREEMPTED": (RunStatus.FAILED, "the Slurm job was preempted by a job of higher priority"),
    "BOOT_FAIL": (RunStatus.FAILED, "the Slurm job's node failed to boot"),
    "DEADLINE": (RunStatus.TIMED_OUT, "the Slurm job reached its deadline"),
    "SPECIAL_EXIT": (RunStatus.FAILED, "the Slurm job was held after a special exit"),
    "REVOKED": (RunStatus.FAILED, "the Slurm job was revoked (a sibling of a federation ran)"),
}
#: squeue's reason for a job held after its node failed to launch it; released this often.
LAUNCH_FAILED = "launch failed requeued held"
RELEASES = 3
#: End states of a job that never started its agent which a requeue may mend.
LAUNCH_FAILED_STATES = ("FAILED", "NODE_FAIL", "BOOT_FAIL")
#: Reasons a PENDING job will never run without someone's help.
STUCK_REASONS = ("launch failed requeued held", "JobHeldAdmin", "PartitionDown",
                 "PartitionInactive", "InvalidAccount", "InvalidQOS", "BadConstraints")

#: Option sets sbatch --test-only accepted in this process (a target object is made
#: per API call: the check would otherwise cost a controller round trip per submit).
_CHECKED: set[tuple[str, ...]] = set()

OPTIONS: dict[str, tuple[Any, str]] = {
    "partition": (str, "Slurm partition to submit to (default: the cluster's default)"),
    "time": (str, "default time limit of a job, as sbatch --time takes it (e.g. 30, 2:00:00)"),
    "cpus_per_task": (int, "CPUs for each run (sbatch --cpus-per-task)"),
    "mem": (str, "memory for each run (sbatch --mem, e.g. 4G)"),
    "gres": (str, "generic resources for each run (sbatch --gres, e.g. gpu:1)"),
    "account": (str, "account to charge (sbatch --account)"),
    "qos": (str, "quality of service (sbatch --qos)"),
    "constraint": (str, "node features required (sbatch --constraint)"),
    "sbatch_arg": (list, "any other sbatch option, passed through quoted (repeatable)"),
    "cluster": (str, "embedded cluster: the one to use, by name, so targets with other "
                     "options share it (default: this target's name)"),
    "max_nodes": (int, "embedded cluster: most nodes it powers up (default 2)"),
    "idle_seconds": (int, "embedded cluster: seconds idle before a node powers down "
                          "(default 60)"),
    "node_cpus": (int, "embedded cluster: CPUs of each node (default: this machine's)"),
    "local": (bool, "use the Slurm cluster whose sbatch is on this machine's PATH"),
    "slurm_conf": (str, "SLURM_CONF for the cluster's commands on its host (default: the "
                        "host's own)"),
}


def sbatch_options(config: dict[str, Any], name: str, run_dir: str,
                   time_limit_seconds: float | None = None, nodes: int = 1,
                   tasks_per_node: int = 1) -> list[str]:
    """The ``sbatch`` command for one run (a pure function): the target's options, the
    run's time limit in whole minutes, its folder and output file, ``nodes`` ×
    ``tasks_per_node`` (1 × 1 for one agent). The script comes on stdin.

    >>> sbatch_options({"partition": "gpu", "sbatch_arg": ["--exclusive"]}, "r1", "/w/r1")[:4]
    ['sbatch', '--parsable', '--job-name=r1', '--chdir=/w/r1']
    """
    argv = ["sbatch", "--parsable", f"--job-name={name}", f"--chdir={run_dir}",
            f"--output={run_dir}/{JOB_OUTPUT}", "--export=ALL",
            f"--nodes={nodes}", f"--ntasks-per-node={tasks_per_node}"]
    for key in ("partition", "cpus_per_task", "mem", "gres", "account", "qos", "constraint"):
        if config.get(key) not in (None, ""):
            argv.append(f"--{key.replace('_', '-')}={config[key]}")
    limit = time_limit_seconds
    if limit is not None:
        argv.append(f"--time={max(1, math.ceil((limit + TIME_MARGIN) / 60))}")
    elif config.get("time"):
        argv.append(f"--time={config['time']}")
    argv += [str(a) for a in config.get("sbatch_arg") or []]
    return argv


def batch_script(agent: list[str], run_dir: str, nodes: int = 1,
                 tasks_per_node: int = 1) -> str:
    """The batch script (a pure function): the agent, in the run folder, replacing the
    shell so Slurm's signals reach it. ``nodes``/``tasks_per_node`` are for a launcher
    that starts one agent per task through ``srun``; one agent needs neither."""
    del nodes, tasks_per_node  # one agent: the batch step itself
    return ("#!/bin/sh\n"
            f"export {SLURM_JOB_ENV}=1\n"
            f"cd {shlex.quote(run_dir)} || exit 1\n"
            f"exec {shlex.join(agent)}\n")


def array_script(runs: list[tuple[list[str], str]]) -> str:
    """The batch script of a job array (a pure function): task ``i`` runs the agent of
    ``runs[i]`` (``(agent command, run folder)``), its own output in its own folder."""
    cases = "".join(
        f"{i}) cd {shlex.quote(run_dir)} || exit 1\n"
        f"   exec >>{JOB_OUTPUT} 2>&1\n"
        f"   exec {shlex.join(agent)} ;;\n" for i, (agent, run_dir) in enumerate(runs))
    return ("#!/bin/sh\n"
            f"export {SLURM_JOB_ENV}=1\n"
            f"case \"$SLURM_ARRAY_TASK_ID\" in\n{cases}esac\n"
            "echo \"no run for array task $SLURM_ARRAY_TASK_ID\" >&2\nexit 1\n")


def time_limit(spec: RunSpec | dict[str, Any], config: dict[str, Any]) -> float | None:
    """The run's limit in seconds: its ``max_run_duration_seconds``, else ``time``."""
    limit = spec.get("max_run_duration_seconds") if isinstance(spec, dict) else \
        spec.max_run_duration_seconds
    if limit:
        return float(limit)
    if config.get("time"):
        return slurm_seconds(str(config["time"]))
    return None


def slurm_seconds(text: str) -> float:
    """Slurm's time formats (``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``)."""
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        h, m, s = parts[:3]
        return float(((days * 24 + h) * 60 + m) * 60 + s)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        return float(parts[0] * 60)
    if len(parts) == 2:
        return float(parts[0] * 60 + parts[1])
    return float((parts[0] * 60 + parts[1]) * 60 + parts[2])


class SbatchLauncher(Launcher):
    """Each run as one ``sbatch`` job; see the module docstring."""

    options = OPTIONS

    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        super().__init__(name, config, workspace)
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[float, dict[str, str] | None]] = {}
        #: run → (its job id, when it was last submitted or read): asked about together
        self._watched: dict[str, tuple[str, float]] = {}
        self._nodes: tuple[float, dict[str, Any]] | None = None
        #: While ``collect`` runs on a thread: the runs it launches, sent as one array.
        self._batch = threading.local()

    # -- which cluster -----------------------------------------------------------------

    @property
    def embedded(self) -> bool:
        return not self.config.get("local") and not self.config.get("host")

    @property
    def cluster_name(self) -> str:
        return str(self.config.get("cluster") or self.name)

    def cluster(self) -> EmbeddedSlurm:
        from jupyter_compute.targets.slurm.cluster import EmbeddedSlurm, SlurmShape

        return EmbeddedSlurm(self.workspace.dir, self.cluster_name, SlurmShape(
            max_nodes=int(self.config.get("max_nodes") or 2),
            node_cpus=int(self.config.get("node_cpus") or 0),
            idle_seconds=int(self.config.get("idle_seconds") or 60)))

    def slurm_conf(self, start: bool = False) -> str | None:
        """The SLURM_CONF of the cluster's commands; ``start``: the embedded one first."""
        if self.embedded:
            cluster = self.cluster()
            state = cluster.ensure() if start else cluster.load()
            if state is None:
                raise TargetError(f"the embedded Slurm cluster of {self.name!r} is not "
                                  f"running; start it: jupyter-compute start {self.name}")
            return state.conf
        conf = self.config.get("slurm_conf")
        return str(conf) if conf else None

    def command(self, host: Host, argv: list[str], stdin: bytes = b"", timeout: float = 60,
                start: bool = False) -> tuple[int, str, str]:
        """Run a Slurm command on the cluster's host, with its SLURM_CONF."""
        conf = self.slurm_conf(start)
        full = ["env", f"SLURM_CONF={conf}", *argv] if conf else argv
        code, out, err = host.run(full, stdin=stdin, timeout=timeout)
        return code, out.decode(errors="replace"), err.decode(errors="replace")

    # -- hooks: before a run ---------------------------------------------------------

    def validate(self, spec: RunSpec) -> None:
        if spec.docker_image:
            raise UsageError(f"target {self.name!r} runs Slurm jobs, not docker images; "
                             "attach a docker target (--type docker) for images")

    def check(self, host: Host) -> None:
        if self.embedded:
            import shutil

            from jupyter_compute.targets.slurm.cluster import INSTALL_HINT

            for exe in ("sbatch", "squeue", "scancel"):
                if shutil.which(exe) is None:
                    raise UsageError(f"{exe} is not installed; {INSTALL_HINT}")
            return
        code, out, err = self.command(host, ["sbatch", "--version"], timeout=30)
        if code:
            where = "this machine" if self.config.get("local") else repr(self.config["host"])
            raise UsageError(f"no sbatch on {where} ({_last(err or out)}); install Slurm's "
                             "client there or give the login node with --host")

    def prepare(self, host: Host) -> None:
        """Start the embedded cluster if needed; check the target's sbatch options once
        (``sbatch --test-only``): a bad option, an unknown partition, an impossible
        request or a cluster that does not answer fails here, before a run is recorded."""
        argv = sbatch_options(self.config, "check", "/tmp")
        key = (self.name, str(self.config.get("host")), *argv)
        with self._lock:
            if key in _CHECKED and (not self.embedded or self.cluster().running()):
                return
        code, out, err = self.command(host, [*argv, "--test-only"], b"#!/bin/sh\ntrue\n",
                                      timeout=30, start=True)
        if code:
            raise UsageError(self._sbatch_error(err or out))
        with self._lock:
            _CHECKED.add(key)

    def agent_spec(self, host: Host, ctx: SubmitContext) -> None:
        """The agent ends the run TimedOut at the target's ``time`` when the run has no
        limit of its own: Slurm's limit (whole minutes) comes after, as a backstop."""
        limit = self.config.get("time") or _time_arg(self.config.get("sbatch_arg") or [])
        if not ctx.agent.get("max_run_duration_seconds") and limit:
            ctx.agent["max_run_duration_seconds"] = slurm_seconds(str(limit))

    def sync(self, host: Host, ctx: SubmitContext) -> None:
        if ctx.agent.get("environment"):  # built by the host's Python, as for a process
            from jupyter_compute.environments import spec_digest
            from jupyter_compute.wheelhouse import prepare_environment

            prepare_environment(host, self.workspace, ctx.agent, spec_digest)

    def launch(self, host: Host, ctx: SubmitContext) -> None:
        run_dir = host.run_dir(ctx.run_id)
        batch = getattr(self._batch, "runs", None)
        if batch is not None:  # part of a job array: sent by submit_array
            batch.append((ctx.run_id, self.agent_command(host, ctx, run_dir), run_dir,
                          time_limit(ctx.agent, self.config)))
            return
        ranks = ctx.agent.get("ranks") or {}  # a multi-node run: its whole allocation
        argv = sbatch_options(self.config, ctx.run_id, run_dir,
                              time_limit(ctx.agent, self.config),
                              nodes=int(ranks.get("nodes", 1)),
                              tasks_per_node=int(ranks.get("procs_per_node", 1)))
        script = batch_script(self.agent_command(host, ctx, run_dir), run_dir)
        code, out, err = self.command(host, argv, script.encode(), timeout=60, start=True)
        if code:
            raise UsageError(self._sbatch_error(err or out))
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise TargetError(f"sbatch on {self.name!r} answered {out.strip()!r}, not a job id")
        self.record(ctx.run_id, job_id)

    @contextlib.contextmanager
    def collect(self) -> Iterator[list[tuple[str, list[str], str, float | None]]]:
        """Within it, ``launch`` on this thread only collects its runs, for ``submit_array``."""
        self._batch.runs = []
        try:
            yield self._batch.runs
        finally:
            self._batch.runs = None

    def submit_array(self, host: Host, runs: list[tuple[str, list[str], str, float | None]],
                     concurrency: int, name: str) -> str:
        """One ``sbatch --array=0-N%K`` for the collected ``runs``; each run's record gets
        its task (``<array id>_<i>``), so status and cancel address that task alone."""
        limits = [limit for *_, limit in runs if limit is not None]
        argv = sbatch_options(self.config, name, runs[0][2], max(limits) if limits else None)
        argv = [a for a in argv if not a.startswith("--output=")]
        argv += ["--output=/dev/null", f"--array=0-{len(runs) - 1}%{max(1, concurrency)}"]
        script = array_script([(agent, run_dir) for _, agent, run_dir, _ in runs])
        code, out, err = self.command(host, argv, script.encode(), timeout=60, start=True)
        if code:
            raise UsageError(self._sbatch_error(err or out))
        array_id = out.strip().split(";")[0]
        if not array_id.isdigit():
            raise TargetError(f"sbatch on {self.name!r} answered {out.strip()!r}, not a job id")
        for i, (run_id, *_rest) in enumerate(runs):
            self.record(run_id, f"{array_id}_{i}")
        return array_id

    def record(self, run_id: str, job_id: str) -> None:
        protocol.write_json_atomic(str(self.workspace.run_dir(run_id) / JOB_RECORD), {
            "job_id": job_id, "submitted": time.time(),
            "cluster": self.cluster_name if self.embedded else None})
        with self._lock:  # its first read asks together with its array's other tasks
            self._watched[run_id] = (job_id, time.monotonic())

    def agent_command(self, host: Host, ctx: SubmitContext, run_dir: str) -> list[str]:
        """How the agent starts on the node: the host's Python and our runtime."""
        from jupyter_compute.targets.local import LocalHost

        if isinstance(host, LocalHost):
            from jupyter_compute.targets.runtime import install_runtime

            return protocol.agent_command(str(self.config.get("python") or sys.executable),
                                          str(install_runtime(self.workspace.dir)), run_dir)
        where = host.env_root()
        python = where[0] if where else "python3"
        return protocol.agent_command(python, (ctx.agent.get("pythonpath") or [""])[0],
                                      run_dir)

    # -- hooks: a run that was launched ----------------------------------------------

    def alive(self, host: Host, run_id: str, status: dict[str, Any]) -> bool | None:
        """Slurm's word until the agent reports (see the module docstring)."""
        rec = job_record(self.workspace, run_id)
        if rec is None:
            return None  # not launched yet: the submitting client's beat decides
        if rec.get("cluster") and not self._cluster_runs(rec["cluster"]) and \
                (not status.get("agent") or not host.process_alive(status["agent"])):
            self._end(host, run_id, RunStatus.FAILED,
                      f"the embedded Slurm cluster {rec['cluster']!r} was stopped before "
                      "the run ended; start it and submit again", force=True)
            return False
        if status.get("agent"):
            return self._after_agent(host, run_id, rec, status)
        try:
            job = self.job(host, run_id, rec)
        except TargetError as exc:
            status.update(detail=f"Slurm does not answer: {exc}")
            return True  # cannot tell: a controller may come back
        if job is None:
            if (self.workspace.run_dir(run_id) / protocol.CANCEL).exists():
                # a canceled array task that never started leaves no trace in squeue
                self._end(host, run_id, RunStatus.CANCELED, "canceled before it started")
                return False
            self._end(host, run_id, RunStatus.FAILED,
                      f"the Slurm job {rec['job_id']} is gone from the cluster (it was "
                      "purged or the cluster was restarted); submit again")
            return False
        state, reason = job["state"], job.get("reason") or ""
        if state == "PENDING":
            if reason.startswith(LAUNCH_FAILED) and self._release(host, run_id, rec):
                status.update(detail="Slurm could not start the job on its node; "
                                     "trying again")
                return True
            if any(reason.startswith(s) for s in STUCK_REASONS):
                self._end(host, run_id, RunStatus.FAILED,
                          f"Slurm cannot run the job {rec['job_id']}: {reason}"
                          f"{self._output_hint(host, run_id)}")
                self._scancel(host, rec)
                return False
            status.update(detail=f"waiting: {reason}" if reason and reason != "None"
                          else "waiting: queued")
        elif state == "CONFIGURING":
            status.update(detail=POWER_UP)
        elif state in ("RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
                       "SIGNALING", "STAGE_OUT"):
            status.update(status=RunStatus.PREPARING.value,
                          detail=f"starting the agent on {job.get('node') or 'the node'}")
        else:
            _read = _read_status(host, run_id)
            if not _read.get("agent"):
                ended, words = END_STATES.get(state, (RunStatus.FAILED,
                                                      f"the Slurm job ended {state}"))
                canceled = (self.workspace.run_dir(run_id) / protocol.CANCEL).exists()
                # Ended before its agent ran: its node failed to launch it (Slurm fails
                # some such jobs instead of holding them). Once more, as for a held one.
                if state in LAUNCH_FAILED_STATES and not canceled and \
                        self._release(host, run_id, rec, how="requeue"):
                    status.update(detail="Slurm could not start the job on its node; "
                                         "trying again")
                    return True
                if canceled:
                    ended, words = RunStatus.CANCELED, "canceled before it started"
                why = f" ({reason})" if reason not in ("", "None") and \
                    ended is not RunStatus.CANCELED else ""
                self._end(host, run_id, ended, f"{words} before the agent started{why}"
                          f"{self._output_hint(host, run_id)}")
            return False
        return True

    def _release(self, host: Host, run_id: str, rec: dict[str, Any],
                 how: str = "release") -> bool:
        """Release a job Slurm held after a failed launch (a node's fork failed under load),
        or requeue (``how``) one it ended instead, at most ``RELEASES`` times per run, by
        one reader (the record is rewritten under a lock); True if it was released (now
        or by another reader)."""
        import fcntl

        path = self.workspace.run_dir(run_id) / JOB_RECORD
        with open(path.with_name(f".{JOB_RECORD}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            now = job_record(self.workspace, run_id) or rec
            if now.get("released_at") and time.time() - float(now["released_at"]) < 10:
                return True  # released a moment ago: Slurm has not moved it yet
            releases = int(now.get("releases", 0))
            if releases >= RELEASES:
                return False
            job = str(rec["job_id"])
            code, out, err = self.command(host, ["scontrol", how, job], timeout=30)
            if code:
                return False
            # A requeued job waits a while before it may start again: not this one.
            self.command(host, ["scontrol", "update", f"jobid={job}", "StartTime=now"],
                         timeout=30)
            protocol.write_json_atomic(str(path), {**now, "releases": releases + 1,
                                                   "released_at": time.time()})
        with self._lock:
            self._jobs.pop(run_id, None)
        return True

    def _cluster_runs(self, name: str) -> bool:
        from jupyter_compute.targets.slurm.cluster import EmbeddedSlurm

        return EmbeddedSlurm(self.workspace.dir, name).running()

    def _after_agent(self, host: Host, run_id: str, rec: dict[str, Any],
                     status: dict[str, Any]) -> bool | None:
        """Once the agent ran: its pid decides while it lives. When it is gone without an
        end status, Slurm says why: the job ended (its node failed, it ran out of memory,
        was preempted or hit its time limit: the run ends so, in words), or it was
        requeued (the run waits for the job's next start: one run, not a lost one)."""
        if host.process_alive(status["agent"]):
            return None
        try:
            job = self.job(host, run_id, rec, max_age=0)
        except TargetError:
            return None  # the heartbeat decides
        if job is None:
            return None
        state = job["state"]
        if state in ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
            status.update(detail=f"requeued by Slurm ({job.get('reason') or state}); "
                                 "the run starts again with the job")
            return True
        if state in ("RUNNING", "COMPLETING"):
            return True  # a requeued job's new agent is starting, or the job is ending
        if state in END_STATES and state != "COMPLETED":
            ended, words = END_STATES[state]
            if state == "CANCELLED" and \
                    (self.workspace.run_dir(run_id) / protocol.CANCEL).exists():
                words = "canceled by request"
            self._end(host, run_id, ended, f"{words} (job {rec['job_id']})", force=True)
            return False
        return None

    def cancel(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        """``scancel``: Slurm signals every process of the job, SIGKILL after KillWait."""
        rec = job_record(self.workspace, run_id)
        if rec is not None:
            self._scancel(host, rec)
        with self._lock:
            self._jobs.pop(run_id, None)

    def abandon(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        rec = job_record(self.workspace, run_id)
        if rec is not None:
            self._scancel(host, rec)

    def ended(self, host: Host, run_id: str, status: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self._jobs.pop(run_id, None)
        return status

    # -- Slurm's view ------------------------------------------------------------------

    def job(self, host: Host, run_id: str, rec: dict[str, Any] | None = None,
            max_age: float = JOB_TTL) -> dict[str, str] | None:
        """``{id, state, reason, node, exit_code}`` of the run's job, as squeue says (cached
        ``max_age``); None when Slurm does not know it. ``TargetError`` if Slurm does not
        answer."""
        rec = rec or job_record(self.workspace, run_id)
        if rec is None:
            return None
        now = time.monotonic()
        with self._lock:
            hit = self._jobs.get(run_id)
            if hit is not None and now - hit[0] < max_age:
                return hit[1]
            self._watched[run_id] = (str(rec["job_id"]), now)
            for rid, (_, read) in list(self._watched.items()):
                if now - read > WATCHED_SECONDS:
                    del self._watched[rid]
            stale = {rid: jid for rid, (jid, _) in self._watched.items()
                     if rid == run_id or now - self._jobs.get(rid, (0.0, None))[0] >= max_age}
        found = self.jobs(host, sorted(set(stale.values())))
        with self._lock:
            for rid, jid in stale.items():
                self._jobs[rid] = (now, found.get(jid))
        return found.get(str(rec["job_id"]))

    def jobs(self, host: Host, job_ids: list[str]) -> dict[str, dict[str, str]]:
        """Job id → ``{id, state, reason, node, exit_code}``, in one ``squeue`` call."""
        if self.embedded and not self.cluster().running():
            raise TargetError(f"the embedded Slurm cluster of {self.name!r} is not running")
        code, out, err = self.command(host, [
            "squeue", "-h", "-r", "--states=all", "-j", ",".join(job_ids),
            "-o", "%i|%T|%N|%r"], timeout=30)
        if code and "Invalid job id" not in err:
            raise TargetError(_last(err or out))
        found: dict[str, dict[str, str]] = {}
        for line in out.splitlines():
            parts = line.split("|", 3)
            if len(parts) == 4:
                found[parts[0]] = {"id": parts[0], "state": parts[1], "node": parts[2],
                                   "reason": parts[3]}
        return found

    def nodes(self, host: Host, max_age: float = NODES_TTL) -> dict[str, Any]:
        """``{current, idle, allocated, powered_down, pending, min, max, running}``: the
        nodes of the cluster (of ``partition`` when given), as sinfo says now."""
        now = time.monotonic()
        with self._lock:
            if self._nodes is not None and now - self._nodes[0] < max_age:
                return dict(self._nodes[1])
        counts: dict[str, Any] = {"current": 0, "idle": 0, "allocated": 0, "powered_down": 0,
                                  "pending": 0, "min": 0,
                                  "max": int(self.config.get("max_nodes") or 2)
                                  if self.embedded else None, "running": False}
        if not self.embedded or self.cluster().running():
            part = f" --partition={shlex.quote(str(self.config['partition']))}" \
                if self.config.get("partition") else ""
            # One round trip: the nodes, then those whose job waits for them to boot.
            code, out, _err = self.command(host, ["sh", "-c", (
                f"sinfo -h -N{part} -o '%N|%t' && echo --- && "
                f"squeue -h{part} -t CONFIGURING -o '%N'")], timeout=30)
            if code == 0:
                counts["running"] = True
                nodes, _, booting = out.partition("---\n")
                counts.update(node_counts(nodes, booting))
                if not self.embedded:
                    counts["max"] = counts["current"] + counts["powered_down"]
        with self._lock:
            self._nodes = (now, counts)
        return dict(counts)

    def forget(self) -> None:
        with self._lock:
            self._nodes = None
            self._jobs.clear()
            self._watched.clear()
        _CHECKED.clear()

    # -- pieces ------------------------------------------------------------------------

    def _scancel(self, host: Host, rec: dict[str, Any]) -> None:
        try:
            self.command(host, ["scancel", str(rec["job_id"])], timeout=30)
        except TargetError:
            pass

    def _end(self, host: Host, run_id: str, status: RunStatus, error: str,
             force: bool = False) -> None:
        """End a run whose agent never started (``force``: whose agent died with its job),
        unless it has ended (or started) since."""
        st = _read_status(host, run_id)
        if (st.get("agent") and not force) or st.get("status") in protocol.TERMINAL_STATUSES:
            return
        now = protocol.utcnow()
        st.update(status=status.value, ended=now, exit_code=None, error=error)
        st.pop("detail", None)
        st.setdefault("history", []).append([status.value, now])
        host.write(run_id, protocol.STATUS, json.dumps(st, indent=1).encode())

    def _output_hint(self, host: Host, run_id: str) -> str:
        text = host.read(run_id, JOB_OUTPUT).decode(errors="replace")
        lines = [line for line in text.strip().splitlines() if line.strip()]
        return f" | {lines[-1][:200]}" if lines else ""

    def _sbatch_error(self, text: str) -> str:
        """sbatch's refusal as one line that says what to change."""
        line = _last(text).removeprefix("sbatch: error: ").removeprefix(
            "Batch job submission failed: ").removeprefix("allocation failure: ")
        low = text.lower()
        if "unrecognized option" in low or "invalid option" in low:
            bad = next((ln for ln in text.splitlines() if "option" in ln), line).strip()
            return (f"{bad.removeprefix('sbatch: ')} — an --sbatch-arg of {self.name!r} is not "
                    "an sbatch option (see sbatch --help)")
        if "invalid partition" in low:
            return (f"Slurm refused {self.name!r}: {line} "
                    f"({self.config.get('partition')!r}); choose one that sinfo lists")
        if "requested node configuration is not available" in low or \
                "more processors requested than permitted" in low or \
                "memory specification can not be satisfied" in low:
            return (f"Slurm refused {self.name!r}: no node of the partition can run this "
                    f"request ({line}); ask for less "
                    "(--cpus-per-task, --mem, --gres)")
        if "unable to contact slurm controller" in low or "connection refused" in low or \
                "zero bytes were transmitted" in low:
            return (f"the Slurm controller of {self.name!r} does not answer ({line}); start "
                    "its daemons (slurmctld, munge) or check SLURM_CONF")
        return f"Slurm refused {self.name!r}: {line}"


def node_counts(sinfo: str, booting: str = "") -> dict[str, int]:
    """Counts of ``sinfo -h -N -o '%N|%t'`` lines (a pure function). ``~`` is powered down,
    ``#`` powering up, ``%`` powering down; a node listed in several partitions counts
    once. Pending: powering up, or in ``booting`` (``squeue -t CONFIGURING -o %N``: its
    job still waits for the node to be ready).

    >>> node_counts("n1|idle~\\nn2|alloc\\nn3|idle\\nn4|mix#")
    {'current': 3, 'idle': 1, 'allocated': 1, 'powered_down': 1, 'pending': 1}
    """
    states = {}
    for line in sinfo.splitlines():
        name, _, state = line.strip().partition("|")
        if name:
            states[name] = state
    waiting = set(booting.split())
    counts = {"current": 0, "idle": 0, "allocated": 0, "powered_down": 0, "pending": 0}
    for name, state in states.items():
        if "~" in state:
            counts["powered_down"] += 1
            continue
        counts["current"] += 1
        if "#" in state or name in waiting:
            counts["pending"] += 1
        elif state.startswith("idle"):
            counts["idle"] += 1
        elif state.startswith(("alloc", "mix", "comp")):
            counts["allocated"] += 1
    return counts


def _time_arg(args: list[str]) -> str | None:
    """The time limit among passed-through sbatch arguments (``--time=X``, ``-t X``)."""
    for i, arg in enumerate(args):
        if arg.startswith(("--time=", "-t=")):
            return arg.split("=", 1)[1]
        if arg in ("--time", "-t") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("-t") and len(arg) > 2 and arg[2:3].isdigit():
            return arg[2:]
    return None


def job_record(workspace: Workspace, run_id: str) -> dict[str, Any] | None:
    rec = protocol.read_json(str(workspace.run_dir(run_id) / JOB_RECORD))
    return rec if isinstance(rec, dict) else None


def _read_status(host: Host, run_id: str) -> dict[str, Any]:
    raw = host.read(run_id, protocol.STATUS)
    try:
        st = json.loads(raw) if raw else None
    except ValueError:
        st = None
    return st if isinstance(st, dict) else {"status": RunStatus.QUEUED.value}


def _last(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
