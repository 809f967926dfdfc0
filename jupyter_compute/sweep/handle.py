"""Starting a sweep, and ``Sweep``: a handle on one, from any process.

::

    from jupyter_compute.sweep import sweep, Sweep

    s = sweep("train.py", config="sweep.yml", target="local", seed=7)
    s.wait()
    s.best()          # {"index": 2, "run_id": …, "params": {"--penalty": 1}, "metric": 0.91}
    Sweep.get(s.id)   # reattach from any kernel or shell

Starting a sweep freezes the source folder (a snapshot materialized into the
sweep's folder, so every trial runs the same code), records the parent run and
starts the controller as a detached process (see ``controller.py``); it returns
at once.
"""

from __future__ import annotations

import random
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runs import ParentRun, Run
from jupyter_compute.sweep.config import SweepConfig, load_sweep_config
from jupyter_compute.sweep.controller import POINTS, SOURCE, STATE, argument_pairs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.summary import SweepSummary
    from jupyter_compute.workspace import Workspace

KIND = "sweep"


def sweep(script: str | Path | None, config: SweepConfig | str | Path | dict[str, Any], *,
          target: str | None = None, name: str | None = None,
          arguments: list[Any] | None = None, source_dir: str | Path | None = None,
          workspace: Workspace | str | Path | None = None, seed: int | None = None,
          wait: bool = False, extra_files: dict[str, bytes] | None = None,
          kernel: str | None = None, environment: Any = None, command: str | None = None,
          environment_variables: dict[str, str] | None = None,
          trial_timeout: float | None = None) -> Sweep:
    """Start a hyperparameter sweep of ``script`` on ``target``; return its ``Sweep``.

    ``config`` is a ``sweep.yml`` path, a ``SweepConfig`` or its dict form.
    ``arguments`` are passed to every trial before the swept ones; ``seed`` makes
    random and Bayesian sampling reproducible (default: the config's, else a
    fresh one, recorded in the sweep). The controller runs detached, so the sweep
    goes on if this process ends. Instead of a script, ``command`` is a command line
    template (Azure ML's ``trial.command``): each trial runs it with every
    ``${{search_space.NAME}}`` replaced by its value, shell-quoted. ``trial_timeout``
    (seconds) ends a trial that runs longer.

    >>> s = sweep("train.py", config="sweep.yml", target="local", seed=7, wait=True)
    >>> s.best()["params"]
    {'--penalty': 1}
    """
    from jupyter_compute.agent import materialize
    from jupyter_compute.attached import get_target
    from jupyter_compute.runids import new_run_folder
    from jupyter_compute.runspec import resolve_spec, split_environment
    from jupyter_compute.snapshot import (
        DEFAULT_MAX_BYTES,
        DEFAULT_MAX_CHANGED_FILES,
        take_snapshot,
    )
    from jupyter_compute.store import RunRecord
    from jupyter_compute.workspace import Workspace
    from jupyter_compute.workspace import find as find_workspace

    cfg = _config(config)
    spec = resolve_spec(script, target=target, arguments=arguments, source_dir=source_dir,
                        extra_files=extra_files, kernel=kernel, environment=environment,
                        command=command)
    if command is not None:
        from jupyter_compute import azureml

        names = {f"search_space.{n}" for n in cfg.parameter_space}
        unknown = [r for r in azureml.references(command) if r not in names]
        if unknown:  # each trial would fail alike: say it once, now
            azureml.substitute(command, {n: "" for n in names})
    secret = split_environment(environment_variables or {})[1]
    if secret:  # the sweep's spec is written down, and secrets never are (see runspec)
        raise UsageError(f"a sweep's trials take no secret variables ({', '.join(secret)}): "
                         "set them in the target's own environment")
    if spec.kind == "notebook" and spec.arguments:
        raise UsageError("a notebook takes no arguments after '--'; fixed values belong in its "
                         "parameters cell, swept ones in the sweep's parameter_space")
    ws = workspace if isinstance(workspace, Workspace) else \
        find_workspace(start=spec.source_dir, explicit=workspace)
    child_target = get_target(spec.target, ws)  # an unknown target fails here, not later
    env_mapping = None
    if spec.environment is not None:  # every trial shares it: checked once, here
        from jupyter_compute.environments import resolve

        resolve(spec.environment, spec.source_dir, ws)
        env_mapping = spec.environment.to_mapping(spec.source_dir)
    snap = take_snapshot(spec.source_dir, ws.dir,
                         max_bytes=spec.snapshot_max_bytes or DEFAULT_MAX_BYTES,
                         max_changed_files=spec.snapshot_max_files or DEFAULT_MAX_CHANGED_FILES)
    extra = extra_files or {}
    if command is None and spec.script not in snap.files and spec.script not in extra:
        raise UsageError(f"{spec.script} is excluded from the snapshot by an ignore rule in "
                         f"{spec.source_dir}; un-ignore it to sweep it")
    stem = (spec.display_name if command is not None else Path(spec.script).stem) \
        .lstrip("_") or "sweep"
    name = name or f"{stem}-sweep"
    sweep_id = new_run_folder(ws.runs_dir, name)
    folder = ws.run_dir(sweep_id)
    materialize({rel: list(entry) for rel, entry in snap.files.items()}, str(ws.blobs_dir),
                str(folder / SOURCE))
    for rel, data in extra.items():
        path = folder / SOURCE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    if seed is None:
        seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31)
    created = protocol.utcnow()
    git = snap.git.to_dict() if snap.git else None
    sweep_spec = {
        "sweep_id": sweep_id, "name": name, "script": spec.script, "target": spec.target,
        "target_kind": child_target.kind, "folders_here": child_target.host.folders_here,
        "arguments": list(spec.arguments), "seed": seed,
        "kernel": kernel, "config": cfg.to_dict(), "workspace": str(ws.root),
        "environment": env_mapping, "command": command,
        "environment_variables": dict(environment_variables or {}),
        "trial_timeout": trial_timeout,
        "source_dir": str(spec.source_dir), "git": git,
        # `cancel` waits this long plus 5 s: time to cancel the children (3 s grace each).
        "cancel_grace_seconds": 5.0,
    }
    protocol.write_json_atomic(str(folder / protocol.SPEC), sweep_spec)
    protocol.write_json_atomic(str(folder / protocol.STATUS), {
        "run_id": sweep_id, "status": RunStatus.QUEUED.value, "created": created,
        "history": [[RunStatus.QUEUED.value, created]]})
    protocol.write_json_atomic(str(folder / STATE), _initial_state(sweep_spec, cfg))
    record = RunRecord(
        id=sweep_id, name=name, target="local", kind=KIND, status=RunStatus.QUEUED.value,
        created=created, script=spec.script, arguments=list(spec.arguments),
        source_dir=str(spec.source_dir), snapshot={"id": snap.id, **vars(snap.stats)},
        spec=sweep_spec, git=git)
    ws.store.insert(record)
    Sweep.launch_controller(folder, ws)
    handle = Sweep(record, ws)
    if wait:
        handle.wait()
    return handle


def _config(config: SweepConfig | str | Path | dict[str, Any]) -> SweepConfig:
    if isinstance(config, SweepConfig):
        return config
    if isinstance(config, dict):
        return SweepConfig.from_dict(config)
    if isinstance(config, (str, Path)):
        return load_sweep_config(config)
    raise UsageError(f"config must be a sweep.yml path, a SweepConfig or a dict, got "
                     f"{type(config).__name__}")


def _initial_state(spec: dict[str, Any], cfg: SweepConfig) -> dict[str, Any]:
    return {"id": spec["sweep_id"], "name": spec["name"], "script": spec["script"],
            "target": spec["target"], "status": RunStatus.QUEUED.value,
            "primary_metric": {"name": cfg.primary_metric_name,
                               "goal": cfg.primary_metric_goal.capitalize()},
            "sampling": cfg.sampling, "seed": spec["seed"],
            "policy": cfg.policy.describe() if cfg.policy else "NoTerminationPolicy()",
            "max_total_runs": cfg.max_total_runs, "max_concurrent_runs": cfg.concurrency,
            "max_duration_minutes": cfg.max_duration_minutes, "space_size": cfg.space_size(),
            "parameters": list(cfg.parameter_space), "trials": [], "best": None,
            "warnings": [], "ended_by": None, "exhausted": False,
            "updated": protocol.utcnow()}


class Sweep(ParentRun):
    """A sweep: a run whose children are its trials; the best one, its warnings.

    ``Run.get`` of a sweep's id gives a ``Sweep`` (see ``runkinds``), so everything
    that takes a run (``show``, ``cancel``, the widgets) takes a sweep too.
    """

    CONTROLLER = "jupyter_compute.sweep.controller"
    #: A sweep lasts minutes: its status is polled less often than a run's.
    POLL = (0.05, 0.2, 5.0)

    # -- state -------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The controller's last ``sweep.json``: trials, best, warnings, settings."""
        state = protocol.read_json(str(self.folder / STATE)) or {}
        status = self.status()  # the run's word wins: it notices a controller that died
        if status.is_terminal() or not state.get("status"):
            state["status"] = status.value
        return state

    def trials(self) -> list[dict[str, Any]]:
        """Each trial: index, run_id, params, arguments, status, metric, stop_reason, …

        Once the sweep has ended, a trial its controller left unfinished (it died)
        is read from its run, so nothing shows Running forever.
        """
        trials: list[dict[str, Any]] = self.state().get("trials") or []
        if RunStatus(self.status()).is_terminal():
            for t in trials:
                if t.get("run_id") and not RunStatus(t["status"]).is_terminal():
                    run = Run.get(t["run_id"], self.workspace)
                    t["status"], t["error"] = run.status().value, run.record.error
        return trials

    def best(self) -> dict[str, Any] | None:
        """The trial with the best primary metric (its last logged value), or None."""
        best: dict[str, Any] | None = self.state().get("best")
        return best

    def best_run(self) -> Run | None:
        """The best trial's run, to read its metrics, log and outputs."""
        best = self.best()
        return Run.get(best["run_id"], self.workspace) if best else None

    @property
    def warnings(self) -> list[str]:
        """Warnings of the sweep, e.g. a primary metric that no trial logs."""
        return list(self.state().get("warnings") or [])

    @warnings.setter
    def warnings(self, value: list[str]) -> None:
        """A sweep's warnings are its controller's: the empty list ``Run`` starts with
        is not kept."""

    # -- forms -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The ``show --json`` shape of a sweep: the run's fields, its children, the best."""
        d = super().to_dict()
        state = self.state()
        metric = state.get("primary_metric") or {}
        children = [{
            "id": t["run_id"], "trial": t["index"], "parameters": t["params"],
            "arguments": t["arguments"], "status": t["status"],
            "primary_metric": t["metric"], "intervals": t["intervals"],
            "stop_reason": t["stop_reason"], "error": t["error"],
        } for t in self.trials()]
        best = state.get("best")
        d.update(
            kind=KIND, target=state.get("target", d["target"]), primary_metric=metric,
            sampling=state.get("sampling"), seed=state.get("seed"), policy=state.get("policy"),
            max_total_runs=state.get("max_total_runs"),
            max_concurrent_runs=state.get("max_concurrent_runs"),
            max_duration_minutes=state.get("max_duration_minutes"),
            ended_by=state.get("ended_by"), children=children,
            best_run=None if not best else {
                "id": best["run_id"], "trial": best["index"], "parameters": best["params"],
                "primary_metric": best["metric"]},
            warnings=list(state.get("warnings") or []))
        return d

    def primary_metric(self) -> dict[str, Any] | None:
        """The sweep's best value of its primary metric, or None before any trial logs it."""
        best = self.best() or {}
        if best.get("metric") is None:
            return None
        name = (self.state().get("primary_metric") or {}).get("name")
        return {"name": name, "value": best["metric"], "step": None}

    def describe(self) -> str:
        """What ``jupyter-compute show`` prints for a sweep: its trials, best first."""
        return self.summary().text()

    def summary(self, tail_lines: int = 0, fetch_outputs: bool = True,
                log_tail: list[str] | None = None) -> SweepSummary:
        """The sweep's current state, as static text and HTML (a table of trials)."""
        from jupyter_compute.summary import SweepSummary

        try:
            points, _ = protocol.whole_json_lines((self.folder / POINTS).read_bytes())
        except FileNotFoundError:
            points = []
        return SweepSummary(self.state(), points)

    def __repr__(self) -> str:
        return f"<Sweep {self.id} {self.record.status}>"


__all__ = ["Sweep", "argument_pairs", "sweep"]
