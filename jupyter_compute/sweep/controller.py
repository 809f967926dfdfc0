"""The sweep controller: a detached process that runs one sweep to its end.

::

    python -m jupyter_compute.sweep.controller .jupyter_compute/runs/<sweep-id>

A sweep is a parent run (kind ``sweep``, on the ``local`` target: the controller
runs on this machine) whose children are ordinary runs on any target, each with
``parent_id`` set. The controller is to a sweep what the agent is to a run: it
starts in a session of its own, so the kernel or shell that started the sweep
may go away, and it writes the parent's run folder::

    runs/<sweep-id>/
      spec.json      what to sweep: script, target, config, seed (written by the client)
      status.json    the parent's lifecycle; "agent" is this process, so a dead
                     controller is noticed (Failed, "agent lost") like a dead agent
      output.log     what the controller did and why, one "[sweep]" line each
      sweep.json     the current state: trials, their parameters, status, metric,
                     stop reason; the best trial; warnings (replaced atomically)
      trials.jsonl   every primary-metric value of every trial, appended (for charts)
      metrics.jsonl  the parent's own metrics: "best <metric>" after each trial
      source/        the source folder frozen when the sweep started: every trial
                     runs the same code even if the folder is edited meanwhile
      cancel         present when someone asked the sweep to stop

The loop keeps up to ``max_concurrent_runs`` children going, reads their metrics
by byte offset, asks the policy (a pure function) whom to stop, cancels those
with the policy's reason written into the child (its ``error``, shown by
``show``), and ends at ``max_total_runs``, when the space is exhausted, or at
``max_duration_minutes``. Canceling the parent (``jupyter-compute cancel ID``,
``Sweep.cancel()``) cancels its children.
"""

from __future__ import annotations

import difflib
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import ComputeError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runs import FolderWatch
from jupyter_compute.sweep.config import SweepConfig
from jupyter_compute.sweep.policies import NoTerminationPolicy, Policy

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runs import Run
    from jupyter_compute.sweep.sampling import Sampler
    from jupyter_compute.workspace import Workspace

STATE = "sweep.json"
POINTS = "trials.jsonl"
SOURCE = "source"
#: Trials that all fail, with none succeeding, before the sweep stops submitting.
FAIL_FAST = 3
#: Reports of another metric, past delay_evaluation, before a missing primary
#: metric is worth a warning (a script may log its loss before its accuracy).
UNSEEN_AFTER = 3
#: How long canceled children may take to end before the controller gives up on them.
STOP_TIMEOUT = 30.0
STATE_EVERY = 0.25   # seconds between rewrites of sweep.json
LOCAL_TICK, REMOTE_TICK = 0.02, 0.5


@dataclass
class Trial:
    """One child run, as the controller tracks it."""

    index: int
    params: dict[str, Any]
    arguments: list[str]
    run_id: str | None = None
    status: str = RunStatus.QUEUED.value
    values: list[float] = field(default_factory=list)  # the primary metric, in order
    others: dict[str, int] = field(default_factory=dict)  # other metric → reports
    outcome: str | None = None      # completed | stopped | failed, once ended
    stop_reason: str | None = None
    error: str | None = None
    started: str | None = None
    ended: str | None = None
    offset: int = 0                 # how far metrics.jsonl has been read
    stop_asked: float | None = None  # monotonic time of the cancel request
    run: Run | None = None
    watch: FolderWatch = field(default_factory=lambda: FolderWatch(None))

    @property
    def active(self) -> bool:
        return self.outcome is None

    @property
    def metric(self) -> float | None:
        """The trial's result: the last value it logged (what the script ended with)."""
        return self.values[-1] if self.values else None

    def summary(self) -> dict[str, Any]:
        return {"index": self.index, "run_id": self.run_id, "params": self.params,
                "arguments": self.arguments, "status": self.status, "metric": self.metric,
                "intervals": len(self.values), "stop_reason": self.stop_reason,
                "error": self.error, "started": self.started, "ended": self.ended}


def argument_pairs(params: dict[str, Any]) -> list[str]:
    """``{"--penalty": 0.5}`` → ``["--penalty", "0.5"]``; a bare name gets ``--``."""
    out = []
    for name, value in params.items():
        out += [name if name.startswith("-") else f"--{name}", str(value)]
    return out


def notebook_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """``{"--penalty": 0.5}`` → ``{"penalty": 0.5}`` for papermill."""
    return {name.lstrip("-"): value for name, value in params.items()}


def did_you_mean(name: str, logged: list[str]) -> str:
    """A hint for a primary metric name that no trial logs."""
    lowered = {n.lower(): n for n in logged}
    close = [lowered[name.lower()]] if name.lower() in lowered else \
        difflib.get_close_matches(name, logged, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}? (primary_metric_name is case-sensitive)"
    return "set primary_metric_name to a metric the script logs with run.log(name, value)"


class Controller:
    """Runs the sweep in ``sweep_dir`` (see the module docstring); ``run()`` returns
    the parent's final status.

    >>> Controller(".jupyter_compute/runs/20261126-0931-train-sweep-7f3a").run()
    <RunStatus.COMPLETED: 'Completed'>
    """

    def __init__(self, sweep_dir: str | Path) -> None:
        from jupyter_compute.sweep.sampling import make_sampler
        from jupyter_compute.workspace import Workspace

        self.dir = Path(sweep_dir).absolute()
        self.spec: dict[str, Any] = protocol.read_json(str(self.dir / protocol.SPEC)) or {}
        self.id: str = self.spec["sweep_id"]
        self.ws: Workspace = Workspace(Path(self.spec["workspace"]))
        self.config = SweepConfig.from_dict(self.spec["config"])
        self.metric = self.config.primary_metric_name
        self.maximize = self.config.maximize
        self.policy: Policy = self.config.policy or NoTerminationPolicy()
        self.sampler: Sampler = make_sampler(self.config, self.spec.get("seed"))
        self.status: dict[str, Any] = protocol.read_json(str(self.dir / protocol.STATUS)) or {}
        self.trials: list[Trial] = []
        self.warnings: dict[str, str] = {}
        self.ended_by: str | None = None   # why no more trials start
        self.exhausted = False
        self.canceled = False
        self.best_logged: float | None = None
        self._stop_signal = False
        self._state_at = 0.0
        self._dirty = True
        self._beat_at = 0.0
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self._log = os.open(self.dir / protocol.LOG, flags, 0o644)
        self._points = os.open(self.dir / POINTS, flags, 0o644)
        self._metrics = os.open(self.dir / protocol.METRICS, flags, 0o644)
        # Trials whose folders are here (Host.folders_here: local, docker, the embedded
        # Ray, Spark and Slurm) are read by stat every tick; others (a remote host's, a
        # Ray job log's) in full every REMOTE_TICK. A spec written before the flag: local.
        self.local = bool(self.spec.get("folders_here",
                                        self.spec.get("target_kind", "local") == "local"))
        self.tick = LOCAL_TICK if self.local else REMOTE_TICK

    # -- bookkeeping -------------------------------------------------------------------

    def say(self, message: str) -> None:
        """A line in the sweep's log (``output.log``)."""
        os.write(self._log, f"[sweep] {message}\n".encode())

    def warn(self, key: str, message: str) -> None:
        """A warning shown by the widget, ``show`` and the CLI, kept until withdrawn."""
        if self.warnings.get(key) != message:
            self.warnings[key] = message
            self.say(f"WARNING: {message}")
            self._dirty = True

    def set_status(self, status: RunStatus, **fields: Any) -> None:
        now = protocol.utcnow()
        self.status.update(fields, status=status.value, updated=now)
        self.status.setdefault("history", []).append([status.value, now])
        protocol.write_json_atomic(str(self.dir / protocol.STATUS), self.status)
        mirrored = {k: v for k, v in fields.items() if k in ("started", "ended", "error")}
        self.ws.store.update(self.id, status=status.value, **mirrored)
        self._dirty = True

    def state(self) -> dict[str, Any]:
        """What ``sweep.json`` holds."""
        cfg = self.config
        best = self.best()
        return {
            "id": self.id, "name": self.spec["name"], "script": self.spec["script"],
            "target": self.spec["target"], "status": self.status.get("status"),
            "primary_metric": {"name": self.metric, "goal": cfg.primary_metric_goal.capitalize()},
            "sampling": cfg.sampling, "seed": self.spec.get("seed"),
            "policy": self.policy.describe(),
            "max_total_runs": cfg.max_total_runs, "max_concurrent_runs": cfg.concurrency,
            "max_duration_minutes": cfg.max_duration_minutes, "space_size": cfg.space_size(),
            "parameters": list(cfg.parameter_space),
            "trials": [t.summary() for t in self.trials],
            "best": best.summary() if best else None,
            "warnings": list(self.warnings.values()),
            "ended_by": self.ended_by, "exhausted": self.exhausted,
            "updated": protocol.utcnow(),
        }

    def write_state(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or (self._dirty and now - self._state_at >= STATE_EVERY):
            # compact: hundreds of trials
            protocol.write_atomic(str(self.dir / STATE), json.dumps(
                self.state(), separators=(",", ":"), default=str).encode("utf-8"))
            self._state_at, self._dirty = now, False
        if now - self._beat_at >= protocol.HEARTBEAT_SECONDS:
            with open(self.dir / protocol.HEARTBEAT, "a"):
                os.utime(self.dir / protocol.HEARTBEAT)
            self._beat_at = now

    def best(self) -> Trial | None:
        """The trial with the best result so far (ties: the earlier trial)."""
        best, best_value = None, 0.0
        for t in self.trials:
            value = t.metric
            if value is not None and (best is None or (value > best_value if self.maximize
                                                       else value < best_value)):
                best, best_value = t, value
        return best

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> RunStatus:
        """Run the sweep to its end and record the outcome; never raises."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.set_status(RunStatus.RUNNING, started=protocol.utcnow(),
                        agent=protocol.process_identity(os.getpid()))
        cfg = self.config
        self.say(f"sweeping {self.spec['script']} on {self.spec['target']}: {cfg.sampling} "
                 f"sampling (seed {self.spec.get('seed')}) over "
                 f"{', '.join(cfg.parameter_space)}; {self.policy.describe()}; "
                 f"{cfg.primary_metric_goal} {self.metric}; up to {cfg.max_total_runs} trials, "
                 f"{cfg.concurrency} at a time")
        try:
            self.loop()
            final, error = self.outcome()
        except BaseException as exc:  # the sweep must never stay Running: say why it died
            self.say(f"controller crashed: {exc!r}\n{traceback.format_exc()}")
            try:
                self.stop_all("its sweep's controller crashed")
                self.drain(deadline=time.monotonic() + 10)
            except Exception:  # noqa: BLE001 - going down anyway; the status says why
                pass
            final, error = RunStatus.FAILED, f"sweep controller crashed: {exc!r}"
        self.finish(final, error)
        return final

    def loop(self) -> None:
        minutes = self.config.max_duration_minutes
        deadline = time.monotonic() + minutes * 60 if minutes else None
        while True:
            if not self.canceled and self._cancel_requested():
                self.canceled = True
                self.ended_by = "canceled"
                self.say("canceled: stopping every running trial")
                self.stop_all(f"canceled with its sweep {self.id}")
            if deadline is not None and time.monotonic() >= deadline and not self.ended_by:
                self.ended_by = "max_duration_minutes"
                self.say(f"max_duration_minutes={minutes:g} reached: stopping running trials")
                self.stop_all(f"canceled: its sweep reached max_duration_minutes={minutes:g}")
            if self.poll():
                self.judge()
            self.check_metric()
            if not self.ended_by:
                self.fill()
            if not any(t.active for t in self.trials) and self.no_more_trials():
                return
            if self.gave_up_waiting():
                return
            self.write_state()
            time.sleep(self.tick)

    def no_more_trials(self) -> bool:
        return bool(self.ended_by) or self.exhausted or \
            len(self.trials) >= int(self.config.max_total_runs or 0)

    def gave_up_waiting(self) -> bool:
        """Canceled trials that do not end (an unreachable host) must not hold the sweep."""
        now = time.monotonic()
        waiting = [t for t in self.trials if t.active]
        if self.ended_by and waiting and all(
                t.stop_asked is not None and now - t.stop_asked > STOP_TIMEOUT for t in waiting):
            for t in waiting:
                self.say(f"trial {t.index} ({t.run_id}) did not end {STOP_TIMEOUT:g}s after "
                         "it was canceled; leaving it")
            return True
        return False

    def drain(self, deadline: float) -> None:
        """Poll until the active trials end (after a stop_all) or ``deadline`` passes."""
        while any(t.active for t in self.trials) and time.monotonic() < deadline:
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - best effort while going down
                return
            time.sleep(self.tick)

    def fill(self) -> None:
        """Start trials until max_concurrent_runs run or none are left to start."""
        if not self.trials and self.start_array():
            return
        total = int(self.config.max_total_runs or 0)
        while sum(t.active for t in self.trials) < self.config.concurrency and \
                len(self.trials) < total and not self.exhausted and not self.ended_by:
            index = len(self.trials) + 1
            params = self.sampler.propose(index)
            if params is None:
                self.exhausted = True
                self._dirty = True
                self.say(f"the search space is exhausted after {len(self.trials)} trials "
                         "(a configuration is never repeated)")
                return
            self.start(Trial(index, params, self.shown(params)))

    def shown(self, params: dict[str, Any]) -> list[str]:
        """How a trial's values are shown: ``--lr 0.1`` for a script's arguments,
        ``lr=0.1`` for a command (its values go into its line instead)."""
        if self.spec.get("command"):
            return [f"{k}={v}" for k, v in params.items()]
        return argument_pairs(params)

    def start_array(self) -> bool:
        """Where the target queues many runs as one job array (``submit_array``: slurm)
        and the sampler needs no outcome to propose (not bayesian), submit every trial
        at once, ``concurrency`` at a time by the queue's own throttle; False to start
        trials one by one. Early termination still cancels single trials (array tasks)."""
        from jupyter_compute.attached import get_target
        from jupyter_compute.runs import Run

        if self.config.sampling == "bayesian":
            return False
        target = get_target(self.spec["target"], self.ws)
        submit_array = getattr(target, "submit_array", None)
        if submit_array is None:
            return False
        trials = []
        for index in range(1, int(self.config.max_total_runs or 0) + 1):
            params = self.sampler.propose(index)
            if params is None:
                self.exhausted = True
                break
            trials.append(Trial(index, params, self.shown(params)))
        if not trials:
            return False
        self.trials.extend(trials)
        self._dirty = True
        try:
            submitted = submit_array([self.trial_spec(t) for t in trials],
                                     self.config.concurrency)
        except ComputeError as exc:
            for trial in trials:
                trial.status, trial.outcome = RunStatus.FAILED.value, "failed"
                trial.error, trial.ended = str(exc), protocol.utcnow()
                self.sampler.report(trial.index, [], "failed")
            self.say(f"the sweep's job array could not start: {exc}")
            self.ended_by = "failures"
            return True
        for trial, (record, warnings) in zip(trials, submitted):
            run = Run(record, target.workspace, target=target)
            run.warnings = warnings
            self.started(trial, run)
        self.say(f"trials 1-{len(trials)} queued as one job array, "
                 f"{self.config.concurrency} at a time")
        return True

    def trial_spec(self, trial: Trial) -> Any:
        """The run spec of ``trial`` (a child run of this sweep)."""
        from jupyter_compute.runspec import resolve_spec

        command = self.spec.get("command")
        notebook = command is None and self.spec["script"].endswith(".ipynb")
        fixed = list(self.spec.get("arguments") or [])
        if command is not None:  # Azure's trial.command: the values go into the line
            from jupyter_compute import azureml

            command = azureml.substitute(command, {
                f"search_space.{name}": str(value) for name, value in trial.params.items()})
        return resolve_spec(
            None if command is not None else self.spec["script"],
            target=self.spec["target"], name=f"{self.spec['name']}-{trial.index}",
            arguments=None if notebook or command is not None else fixed + trial.arguments,
            source_dir=self.dir / SOURCE, parent_id=self.id,
            parameters=notebook_parameters(trial.params) if notebook else None,
            kernel=self.spec.get("kernel"), environment=self.spec.get("environment"),
            command=command,
            environment_variables=self.spec.get("environment_variables") or None,
            max_run_duration_seconds=self.spec.get("trial_timeout"))

    def start(self, trial: Trial) -> None:
        from jupyter_compute.attached import get_target
        from jupyter_compute.runs import Run

        self.trials.append(trial)
        self._dirty = True
        try:
            spec = self.trial_spec(trial)
            run = Run.submit(get_target(spec.target, self.ws), spec)
        except ComputeError as exc:
            trial.status, trial.outcome, trial.error = RunStatus.FAILED.value, "failed", str(exc)
            trial.ended = protocol.utcnow()
            self.say(f"trial {trial.index} could not start: {exc}")
            self.sampler.report(trial.index, [], "failed")
            self.after_failure()
            return
        self.started(trial, run)

    def started(self, trial: Trial, run: Run) -> None:
        """``trial`` runs as ``run``: track it."""
        trial.run, trial.run_id = run, run.id
        if self.local:  # read by stat every tick (see FolderWatch)
            trial.watch = FolderWatch(self.ws.run_dir(run.id))
        if self.spec.get("git"):  # the frozen copy has no .git: keep the original's
            self.ws.store.update(run.id, git=self.spec["git"])
        self.say(f"trial {trial.index} started as {run.id}: {' '.join(trial.arguments)}")

    def poll(self) -> bool:
        """Read the active trials' status and new metrics; True if primary values arrived."""
        fresh = False
        for t in self.trials:
            if not t.active or t.run is None:
                continue
            if not t.watch.changed():
                continue
            try:
                status = t.run.status()  # before the metrics: once terminal, they are final
                records, t.offset = t.run.read_metrics(t.offset)
            except ComputeError as exc:  # e.g. a host that dropped: try again next tick
                self.warn(f"read-{t.index}", f"cannot read trial {t.index} ({t.run_id}): {exc}")
                continue
            self.warnings.pop(f"read-{t.index}", None)
            points = []
            for rec in records:
                if rec.get("kind", "scalar") != "scalar":
                    continue
                value = rec.get("value")
                if rec.get("name") == self.metric and isinstance(value, (int, float)) \
                        and not isinstance(value, bool):
                    t.values.append(float(value))
                    points.append(json.dumps({"trial": t.index, "interval": len(t.values),
                                              "value": float(value)}) + "\n")
                else:
                    name = str(rec.get("name"))
                    t.others[name] = t.others.get(name, 0) + 1
            if points:
                os.write(self._points, "".join(points).encode())
                fresh = True
            if status.value != t.status or points:
                t.status = status.value
                t.started = t.run.record.started
                self._dirty = True
            if status.is_terminal():
                self.ended(t, status)
        return fresh

    def judge(self) -> None:
        """Ask the policy which running trials to stop, and stop them."""
        running = {t.index for t in self.trials if t.active and t.stop_asked is None
                   and t.status == RunStatus.RUNNING.value}
        if not running:
            return
        histories = {t.index: t.values for t in self.trials if t.values}
        finished = {t.index for t in self.trials if t.outcome == "completed"}
        for stop in self.policy.stops(histories, running, maximize=self.maximize,
                                      metric=self.metric, finished=finished):
            trial = self.trials[stop.trial - 1]
            self.stop(trial, f"stopped early by {self.policy.type_name}: {stop.reason}")

    def stop(self, trial: Trial, reason: str) -> None:
        trial.stop_reason, trial.stop_asked = reason, time.monotonic()
        self._dirty = True
        self.say(f"trial {trial.index} ({trial.run_id}) {reason}")
        if trial.run is not None:
            try:
                trial.run.cancel(reason)
            except ComputeError as exc:
                self.say(f"could not cancel trial {trial.index}: {exc}")

    def stop_all(self, reason: str) -> None:
        for t in self.trials:
            if t.active and t.stop_asked is None:
                self.stop(t, reason)

    def ended(self, trial: Trial, status: RunStatus) -> None:
        """A trial reached a terminal status: record why, tell the sampler, track the best."""
        assert trial.run is not None
        record = trial.run.record
        trial.ended, trial.started = record.ended or protocol.utcnow(), record.started
        if status is RunStatus.CANCELED and trial.stop_reason:
            trial.outcome = "stopped"
            self.record_reason(trial)
        elif status is RunStatus.COMPLETED:
            trial.outcome, trial.stop_reason = "completed", None
        else:
            trial.outcome = "failed"
            trial.stop_reason = None
            trial.error = record.error
        self.sampler.report(trial.index, trial.values, trial.outcome)
        value = "-" if trial.metric is None else f"{trial.metric:.6g}"
        self.say(f"trial {trial.index} ({trial.run_id}) {status.value}: {self.metric} {value}")
        if not trial.values:
            ended_without = [t for t in self.trials if not t.active and not t.values]
            logged = sorted({n for t in self.trials for n in t.others})
            noun = "trial" if len(ended_without) == 1 else "trials"
            self.warn("ended-without", (
                f"{len(ended_without)} {noun} ended without logging the primary metric "
                f"{self.metric!r} (logged: {', '.join(logged) or 'nothing'}) — "
                f"{did_you_mean(self.metric, logged)}"))
        best = self.best()
        if best is not None and best.metric is not None and best.metric != self.best_logged:
            self.best_logged = best.metric
            done = sum(not t.active for t in self.trials)
            os.write(self._metrics, protocol.metric_record(
                f"best {self.metric}", best.metric, done).encode())
            self.say(f"best so far: trial {best.index} ({best.run_id}) {self.metric} "
                     f"{best.metric:.6g} ({' '.join(best.arguments)})")
        if trial.outcome == "failed":
            self.after_failure()

    def after_failure(self) -> None:
        """Stop submitting when the first trials all fail: the script is likely broken."""
        ended = [t for t in self.trials if not t.active]
        if self.ended_by or len(ended) < FAIL_FAST or any(t.outcome != "failed" for t in ended):
            return
        self.ended_by = "failures"
        first = (ended[0].error or "").strip().splitlines()
        self.say(f"the first {len(ended)} trials all failed; starting no more "
                 f"(trial {ended[0].index}: {first[-1] if first else 'no error recorded'})")

    def record_reason(self, trial: Trial) -> None:
        """Put the stop reason into the child run itself, where ``show`` reads it."""
        assert trial.run is not None and trial.run_id is not None and trial.stop_reason
        target = trial.run.target
        try:
            st = json.loads(target.read(trial.run_id, protocol.STATUS) or b"{}")
            st.update(error=trial.stop_reason, stop_reason=trial.stop_reason)
            data = json.dumps(st, indent=1, sort_keys=True).encode()
            target.write(trial.run_id, protocol.STATUS, data)
            local = self.ws.run_dir(trial.run_id) / protocol.STATUS
            if target.kind != "local" and local.exists():  # the mirror a remote target keeps
                protocol.write_json_atomic(str(local), st)
        except (ComputeError, OSError, ValueError) as exc:
            self.say(f"could not write the stop reason into {trial.run_id}: {exc}")
        self.ws.store.update(trial.run_id, error=trial.stop_reason)
        trial.run.record.error = trial.stop_reason

    def check_metric(self) -> None:
        """Warn, visibly, while trials log other metrics but never the primary one."""
        if any(t.values for t in self.trials):
            if self.warnings.pop("unseen", None):
                self.say(f"{self.metric!r} has now been logged; warning withdrawn")
                self._dirty = True
            return
        threshold = self.policy.delay_evaluation + UNSEEN_AFTER
        for t in self.trials:
            if t.others and max(t.others.values()) >= threshold:
                logged = sorted({n for x in self.trials for n in x.others})
                self.warn("unseen", (
                    f"no trial has logged the primary metric {self.metric!r} yet, but trial "
                    f"{t.index} logged {', '.join(repr(n) for n in sorted(t.others))} "
                    f"{max(t.others.values())} times — {did_you_mean(self.metric, logged)}; "
                    "until it appears the policy stops nothing and no best run can be named"))
                return

    def outcome(self) -> tuple[RunStatus, str | None]:
        """The parent's final status and error, once no trial is active."""
        if self.canceled:
            return RunStatus.CANCELED, "canceled by request"
        if self.trials and not any(t.values for t in self.trials):
            logged = sorted({n for t in self.trials for n in t.others})
            if any(t.outcome == "completed" for t in self.trials):
                return RunStatus.FAILED, (
                    f"no trial logged the primary metric {self.metric!r} (logged: "
                    f"{', '.join(logged) or 'nothing'}) — {did_you_mean(self.metric, logged)}")
        if self.trials and all(t.outcome == "failed" for t in self.trials):
            first = (self.trials[0].error or "").strip().splitlines()
            return RunStatus.FAILED, (f"all {len(self.trials)} trials failed; trial 1: "
                                      f"{first[-1] if first else 'no error recorded'}")
        return RunStatus.COMPLETED, None

    def finish(self, status: RunStatus, error: str | None) -> None:
        counts: dict[str, int] = {}
        for t in self.trials:
            counts[t.outcome or "left running"] = counts.get(t.outcome or "left running", 0) + 1
        best = self.best()
        summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "none"
        if best is not None:
            os.write(self._metrics, protocol.metric_record("best_run", best.run_id, kind="tag")
                     .encode())
            self.say(f"done: {len(self.trials)} trials ({summary}); best trial {best.index} "
                     f"{best.run_id}: {self.metric} {best.metric:.6g} "
                     f"({' '.join(best.arguments)})")
        else:
            self.say(f"done: {len(self.trials)} trials ({summary}); no best trial")
        if error:
            self.say(f"{status.value}: {error}")
        # The trials' final state is on disk before the status turns terminal: whoever
        # waits on the status reads sweep.json next and must find every result there.
        self.write_state(force=True)
        self.set_status(status, ended=protocol.utcnow(), exit_code=None, error=error)
        self.write_state(force=True)

    # -- cancel ------------------------------------------------------------------------

    def _on_sigterm(self, *_: Any) -> None:
        self._stop_signal = True

    def _cancel_requested(self) -> bool:
        return self._stop_signal or (self.dir / protocol.CANCEL).exists()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m jupyter_compute.sweep.controller SWEEP_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m jupyter_compute.sweep.controller SWEEP_DIR", file=sys.stderr)
        return 2
    return 0 if Controller(args[0]).run() is RunStatus.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
