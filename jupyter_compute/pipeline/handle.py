"""Starting a pipeline, and ``Pipeline``: a handle on one, from any process.

::

    from jupyter_compute.pipeline import submit_file, Pipeline

    p = submit_file("pipeline.yml", overrides={"inputs.epochs": 3}, wait=True)
    p.steps()          # [{"name": "prep", "status": "Completed", "reused": True, …}, …]
    Pipeline.get(p.id) # reattach from any kernel or shell

Starting a pipeline checks the file against the workspace (targets, environments),
takes each step's code snapshot (so editing a folder after the start changes
nothing), records the pipeline run and starts the controller as a detached process
(see ``controller.py``); it returns at once.
"""

from __future__ import annotations

from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import ConfigError, UsageError
from jupyter_compute.pipeline.config import PipelineConfig, load_pipeline
from jupyter_compute.pipeline.controller import STEPS, initial_steps
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runs import ParentRun, Run

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.summary import StaticSummary
    from jupyter_compute.workspace import Workspace

KIND = "pipeline"


def submit_file(path: str | Path, *, name: str | None = None,
                overrides: dict[str, Any] | None = None, reuse: bool = True,
                workspace: Workspace | str | Path | None = None,
                wait: bool = False) -> Pipeline:
    """Start the pipeline of the YAML file ``path``; return its ``Pipeline`` at once.

    ``overrides``: ``{"inputs.epochs": 3}`` (the CLI's ``--set``); ``reuse=False``
    runs every step even if an unchanged one completed before (``--no-reuse``).

    >>> p = submit_file("pipeline.yml", wait=True)
    >>> [s["status"] for s in p.steps()]
    ['Completed', 'Completed', 'Completed']
    """
    from jupyter_compute.attached import attached_targets
    from jupyter_compute.workspace import Workspace

    path = Path(path).expanduser().absolute()
    if not path.is_file():
        raise UsageError(f"no pipeline file {str(path)!r}")
    ws = workspace if isinstance(workspace, Workspace) else _workspace_of(path, workspace)
    config = load_pipeline(path, targets=set(attached_targets(ws)), overrides=overrides)
    return submit(config, name=name, reuse=reuse, workspace=ws, wait=wait)


def _workspace_of(path: Path, explicit: str | Path | None) -> Workspace:
    """The workspace at or above the file's folder, else the current folder's (a file in
    a subfolder of a notebook's folder belongs to the notebook's workspace)."""
    from jupyter_compute.exceptions import WorkspaceError
    from jupyter_compute.workspace import find as find_workspace

    try:
        return find_workspace(start=path.parent, explicit=explicit, create=False)
    except WorkspaceError:
        return find_workspace(explicit=explicit)


def submit(config: PipelineConfig, *, name: str | None = None, reuse: bool = True,
           workspace: Workspace | str | Path | None = None, wait: bool = False) -> Pipeline:
    """Start a checked ``PipelineConfig`` (from a file or the builder); see ``submit_file``."""
    from jupyter_compute.attached import get_target
    from jupyter_compute.runids import new_run_folder
    from jupyter_compute.snapshot import take_snapshot
    from jupyter_compute.store import RunRecord
    from jupyter_compute.workspace import Workspace
    from jupyter_compute.workspace import find as find_workspace

    ws = workspace if isinstance(workspace, Workspace) else \
        find_workspace(start=Path(config.folder), explicit=workspace)
    prepared: dict[str, dict[str, Any]] = {}
    targets: dict[str, Any] = {}
    total_files = total_bytes = new_files = new_bytes = 0
    for step in config.ordered():
        def fail(message: str, step_name: str = step.name, line: int | None = step.line
                 ) -> ConfigError:
            return ConfigError(f"step {step_name!r}: {message}", path=config.path, line=line)

        if step.target not in targets:
            try:
                targets[step.target] = get_target(step.target, ws)
            except UsageError as exc:
                raise fail(str(exc)) from None
        target = targets[step.target]
        entry: dict[str, Any] = {"target_kind": target.kind,
                                 "folders_here": target.host.folders_here, "snapshot": None,
                                 "files": {}, "environment": None}
        if step.code:
            snap = take_snapshot(step.code, ws.dir)
            entry.update(snapshot=snap.id, files={rel: list(e) for rel, e in snap.files.items()})
            total_files += snap.stats.files
            total_bytes += snap.stats.bytes
            new_files += snap.stats.new_files
            new_bytes += snap.stats.new_bytes
            if step.script and step.script not in snap.files:
                raise fail(f"{step.script} is excluded from its code snapshot by an ignore "
                           f"rule in {step.code}; un-ignore it to run it")
        try:
            entry["environment"] = _environment(step.environment, step.code or config.folder,
                                                ws)
        except UsageError as exc:
            raise fail(str(exc)) from None
        prepared[step.name] = entry
    stem = name or config.name or (Path(config.path).stem if config.path else "pipeline")
    pipeline_id = new_run_folder(ws.runs_dir, stem)
    folder = ws.run_dir(pipeline_id)
    created = protocol.utcnow()
    spec = {"pipeline_id": pipeline_id, "name": stem, "workspace": str(ws.root),
            "config": config.to_dict(), "steps": prepared, "reuse": reuse,
            "cancel_grace_seconds": 5.0}
    protocol.write_json_atomic(str(folder / protocol.SPEC), spec)
    protocol.write_json_atomic(str(folder / protocol.STATUS), {
        "run_id": pipeline_id, "status": RunStatus.QUEUED.value, "created": created,
        "history": [[RunStatus.QUEUED.value, created]]})
    protocol.write_atomic(str(folder / STEPS),
                          protocol_json(initial_steps(config)))
    record = RunRecord(
        id=pipeline_id, name=stem, target="local", kind=KIND, status=RunStatus.QUEUED.value,
        created=created, script=Path(config.path).name if config.path else "(python)",
        arguments=[], source_dir=config.folder,
        snapshot={"id": "", "files": total_files, "bytes": total_bytes,
                  "new_files": new_files, "new_bytes": new_bytes},
        spec={"steps": [s.name for s in config.ordered()], "reuse": reuse})
    ws.store.insert(record)
    from jupyter_compute.pipeline.controller import Controller

    trial = Controller(folder)
    try:
        done = trial.all_reused()  # an unchanged rerun needs no process
    finally:
        trial.close()
    if not done:
        Pipeline.launch_controller(folder, ws)
    handle = Pipeline(record, ws)
    if wait:
        handle.wait()
    return handle


def protocol_json(value: Any) -> bytes:
    import json

    return json.dumps(value, indent=1).encode()


def _environment(value: Any, base: str, ws: Workspace) -> dict[str, Any] | None:
    """A step's ``environment:`` as the mapping its run gets (None: the target's Python).

    ``azureml:`` names go through the workspace's aliases (``azureml``); with none, one
    line says the step runs on the target's own interpreter.
    """
    if value is None:
        return None
    from jupyter_compute.azureml import resolve_environment
    from jupyter_compute.environments import resolve

    env = resolve_environment(value, ws, base_dir=base)
    if env is None or env.is_empty():
        return None
    resolve(env, Path(base), ws)  # a missing file fails now, naming the step
    return env.to_mapping(Path(base))


class Pipeline(ParentRun):
    """A pipeline: a run whose children are its steps, in a DAG.

    ``Run.get`` of a pipeline's id gives a ``Pipeline`` (see ``runkinds``), so
    ``show``, ``cancel`` and the widgets take it like any run.
    """

    CONTROLLER = "jupyter_compute.pipeline.controller"
    #: A pipeline lasts minutes: its status is polled less often than a run's.
    POLL = (0.02, 0.2, 5.0)

    def steps(self) -> list[dict[str, Any]]:
        """Each step in topological order: ``{"name", "run_id", "status", "reused",
        "target", "depends_on", "kind", "reason", …}``; status is a run status, or
        ``NotStarted`` / ``Skipped``.

        Once the pipeline has ended, a step its controller left unfinished (it died)
        is read from its run, so nothing shows Running forever.
        """
        try:
            steps: list[dict[str, Any]] = protocol.read_json(str(self.folder / STEPS)) or []
        except ValueError:
            steps = []
        if self.status().is_terminal():
            for s in steps:
                if s.get("run_id") and s["status"] not in ("NotStarted", "Skipped") and \
                        not RunStatus(s["status"]).is_terminal():
                    run = Run.get(s["run_id"], self.workspace)
                    s["status"] = run.status().value
        return steps

    def step_run(self, name: str) -> Run:
        """The run of step ``name`` (the reused run, for a reused step)."""
        for s in self.steps():
            if s["name"] == name:
                if not s.get("run_id"):
                    raise UsageError(f"step {name!r} has not started ({s['status']})")
                return Run.get(s["run_id"], self.workspace)
        names = ", ".join(s["name"] for s in self.steps())
        raise UsageError(f"no step {name!r} in pipeline {self.id} (steps: {names})")

    def to_dict(self) -> dict[str, Any]:
        """The ``show --json`` shape: the run's fields and its ``steps``."""
        d = super().to_dict()
        d.update(kind=KIND, steps=self.steps())
        return d

    def describe(self) -> str:
        """What ``jupyter-compute show`` prints for a pipeline: a line per step."""
        return self.summary().text()

    def summary(self, tail_lines: int = 0, fetch_outputs: bool = True,
                log_tail: list[str] | None = None) -> StaticSummary:
        """The pipeline's state as static text (a line per step) and HTML (the steps'
        graph, ``svgdag``, and a table): what a terminal and a saved notebook show."""
        from jupyter_compute.summary import PipelineSummary

        return PipelineSummary(self.to_dict())

    def __repr__(self) -> str:
        return f"<Pipeline {self.id} {self.record.status}>"


__all__ = ["Pipeline", "submit", "submit_file"]
