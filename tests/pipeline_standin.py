"""A pipeline run made by the test itself, from real step runs, for the views' tests.

Stand-in, said here as the rules ask: the views were built before the pipeline
engine (branch ``pipeline``) was merged. The test plays the controller's part —
a parent run of kind ``pipeline`` whose ``steps.json`` it writes as the contract
(notes/pipeline-contract.md) says the controller does — while every step is a real
run submitted with ``parent_id`` set, on the real ``local`` target. Where the real
handle (``jupyter_compute.pipeline.handle:Pipeline``) is installed, ``runkinds``
gives it; otherwise ``StandInPipeline`` reads the same file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jupyter_compute import protocol, runkinds
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runs import Run
from jupyter_compute.store import RunRecord
from jupyter_compute.workspace import Workspace

STEPS = "steps.json"
HERE = str(Path(__file__).parent)


class StandInPipeline(Run):
    """``Pipeline.steps()`` as the contract gives it: the controller's ``steps.json``."""

    def steps(self) -> list[dict[str, Any]]:
        return list(protocol.read_json(str(self.workspace.run_dir(self.id) / STEPS)) or [])

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["steps"] = self.steps()
        return d

    def summary(self, tail_lines: int = 0, fetch_outputs: bool = True,
                log_tail: list[str] | None = None) -> Any:
        from jupyter_compute.summary import PipelineSummary

        return PipelineSummary(self.to_dict())


def register() -> None:
    """Pipelines' handle: the real one if the engine is installed, else the stand-in."""
    runkinds.HANDLES.setdefault("pipeline", "pipeline_standin:StandInPipeline")


class DrivenPipeline:
    """A pipeline run the test drives: ``start``, ``step(...)`` as steps move, ``end``."""

    def __init__(self, ws: Workspace, name: str, steps: list[dict[str, Any]]) -> None:
        from jupyter_compute.runids import new_run_folder

        self.ws = ws
        self.id = new_run_folder(ws.runs_dir, name)
        self.folder = ws.run_dir(self.id)
        self.steps = [{"run_id": None, "status": "NotStarted", "reused": False,
                       "target": "local", "depends_on": [], "kind": "command", **s}
                      for s in steps]
        created = protocol.utcnow()
        self._write_steps()
        protocol.write_json_atomic(str(self.folder / protocol.STATUS), {
            "run_id": self.id, "status": RunStatus.RUNNING.value, "created": created,
            "started": created, "history": [[RunStatus.RUNNING.value, created]]})
        ws.store.insert(RunRecord(
            id=self.id, name=name, target="local", kind="pipeline",
            status=RunStatus.RUNNING.value, created=created, script="pipeline.yml",
            arguments=[], source_dir=str(ws.root), snapshot={}, started=created))

    def _write_steps(self) -> None:
        protocol.write_json_atomic(str(self.folder / STEPS), self.steps)

    def step(self, name: str, **changes: Any) -> None:
        for s in self.steps:
            if s["name"] == name:
                s.update(changes)
        self._write_steps()

    def submit(self, name: str, script: str) -> Run:
        """Run step ``name`` for real: ``script`` on local, a child of the pipeline."""
        from jupyter_compute import api

        run = api.submit(script, target="local", name=name, parent_id=self.id,
                         workspace=self.ws)
        self.step(name, run_id=run.id, status=run.status().value)
        return run

    def end(self, status: str, error: str | None = None) -> None:
        ended = protocol.utcnow()
        st = protocol.read_json(str(self.folder / protocol.STATUS))
        st.update(status=status, ended=ended, error=error)
        st["history"].append([status, ended])
        protocol.write_json_atomic(str(self.folder / protocol.STATUS), st)
