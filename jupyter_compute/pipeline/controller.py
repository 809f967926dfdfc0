"""The pipeline controller: a detached process that runs one pipeline to its end.

::

    python -m jupyter_compute.pipeline.controller .jupyter_compute/runs/<pipeline-id>

A pipeline is a run (kind ``pipeline``, on ``local``: the controller runs here)
whose children are its steps, runs on any target with ``parent_id`` set and named
by their step. Like the sweep's controller it starts in a session of its own, so
the kernel or shell that started the pipeline may go away. Its run folder::

    runs/<pipeline-id>/
      spec.json      the checked pipeline, each step's code snapshot, environment and
                     target kind (written by the client)
      status.json    the pipeline's lifecycle; "agent" is this process
      output.log     one "[pipeline]" line per thing done and why
      steps.json     each step: name, run_id, status, reused, target, depends_on, kind,
                     reason (replaced atomically on every change)
      steps/<name>/  a step's code, materialized from its snapshot when it starts
      outputs/<o>/   the pipeline's own outputs (``outputs:`` bound by steps), at the end
      cancel         present when someone asked the pipeline to stop

The loop starts every step whose inputs are ready, up to
``settings.max_concurrent_steps`` at a time, each either reused (see ``reuse``)
or submitted; when a step ends its outputs go into the blob store (``data``). A
failed step's dependents end Skipped with the reason while other branches go on;
the pipeline then ends Failed. Cancel cancels the running steps and skips the rest.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.blobstore import BlobStore
from jupyter_compute.exceptions import ComputeError
from jupyter_compute.pipeline import data, reuse
from jupyter_compute.pipeline.config import PipelineConfig, Step
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runs import FolderWatch

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runs import Run
    from jupyter_compute.workspace import Workspace

STEPS = "steps.json"
NOT_STARTED, SKIPPED = "NotStarted", "Skipped"
LOCAL_TICK, REMOTE_TICK = 0.02, 0.25
#: How long canceled steps may take to end before the controller leaves them.
STOP_TIMEOUT = 30.0


@dataclass
class StepState:
    """One step as the controller tracks it."""

    step: Step
    status: str = NOT_STARTED
    run_id: str | None = None
    reused: bool = False
    reason: str | None = None       # why it was skipped, failed or reused
    key: str | None = None
    outputs: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    started: str | None = None
    ended: str | None = None
    run: Run | None = None
    watch: FolderWatch = field(default_factory=lambda: FolderWatch(None))
    stop_asked: float | None = None

    @property
    def ended_ok(self) -> bool:
        return self.status == RunStatus.COMPLETED.value

    @property
    def finished(self) -> bool:
        return self.status == SKIPPED or (self.status != NOT_STARTED
                                          and RunStatus(self.status).is_terminal())

    def summary(self) -> dict[str, Any]:
        s = self.step
        return {"name": s.name, "run_id": self.run_id, "status": self.status,
                "reused": self.reused, "target": s.target, "depends_on": s.depends_on,
                "kind": s.kind, "reason": self.reason, "started": self.started,
                "ended": self.ended, "outputs": {o: len(f) for o, f in self.outputs.items()}}


def initial_steps(config: PipelineConfig) -> list[dict[str, Any]]:
    """``steps.json`` before the controller starts: every step NotStarted."""
    return [StepState(s).summary() for s in config.ordered()]


class Controller:
    """Runs the pipeline in ``folder`` (see the module docstring); ``run()`` returns the
    pipeline's final status.

    >>> Controller(".jupyter_compute/runs/20261207-0600-train-pipeline-7f3a").run()
    <RunStatus.COMPLETED: 'Completed'>
    """

    def __init__(self, folder: str | Path) -> None:
        from jupyter_compute.workspace import Workspace

        self.dir = Path(folder).absolute()
        self.spec: dict[str, Any] = protocol.read_json(str(self.dir / protocol.SPEC)) or {}
        self.id: str = self.spec["pipeline_id"]
        self.ws: Workspace = Workspace(Path(self.spec["workspace"]))
        self.config = PipelineConfig.from_dict(self.spec["config"])
        self.prepared: dict[str, dict[str, Any]] = self.spec["steps"]
        self.reuse = bool(self.spec.get("reuse", True)) and not self.config.force_rerun
        self.store = BlobStore(self.ws.blobs_dir)
        self.states = {s.name: StepState(s) for s in self.config.ordered()}
        self.status: dict[str, Any] = protocol.read_json(str(self.dir / protocol.STATUS)) or {}
        self.canceled = False
        self._stop_signal = False
        self._dirty = True
        self._beat_at = 0.0
        self._remember: list[tuple[str, dict[str, Any]]] = []  # reuse entries to write
        self._targets: dict[str, Any] = {}
        self._held: list[str] | None = None
        self._log = os.open(self.dir / protocol.LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                            0o644)
        # Steps whose folders are here are cheap to read: look often (Host.folders_here).
        here = all(p.get("folders_here") for p in self.prepared.values())
        self.tick = LOCAL_TICK if here else REMOTE_TICK

    # -- bookkeeping -------------------------------------------------------------------

    def say(self, message: str) -> None:
        if self._held is not None:  # a trial pass (all_reused): written only if it holds
            self._held.append(message)
            return
        os.write(self._log, f"[pipeline] {message}\n".encode())

    def set_status(self, status: RunStatus, **fields: Any) -> None:
        now = protocol.utcnow()
        self.status.update(fields, status=status.value, updated=now)
        self.status.setdefault("history", []).append([status.value, now])
        protocol.write_json_atomic(str(self.dir / protocol.STATUS), self.status)
        mirrored = {k: v for k, v in fields.items() if k in ("started", "ended", "error")}
        self.ws.store.update(self.id, status=status.value, **mirrored)

    def write_steps(self) -> None:
        while self._remember:
            reuse.remember(self.ws.dir, *self._remember.pop())
        if self._dirty:
            protocol.write_atomic(str(self.dir / STEPS), json.dumps(
                [s.summary() for s in self.states.values()], indent=1).encode())
            self._dirty = False
        now = time.monotonic()
        if now - self._beat_at >= protocol.HEARTBEAT_SECONDS:
            with open(self.dir / protocol.HEARTBEAT, "a"):
                os.utime(self.dir / protocol.HEARTBEAT)
            self._beat_at = now

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> RunStatus:
        """Run the pipeline to its end and record the outcome; never raises."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.set_status(RunStatus.RUNNING, started=protocol.utcnow(),
                        agent=protocol.process_identity(os.getpid()))
        self.say(f"{len(self.states)} steps: " + ", ".join(
            f"{s.name} on {s.target}" for s in self.config.ordered())
            + f"; up to {self.config.max_concurrent_steps} at a time"
            + ("" if self.reuse else "; reuse off: every step runs"))
        try:
            self.loop()
            final, error = self.outcome()
        except BaseException as exc:  # the pipeline must never stay Running: say why
            self.say(f"controller crashed: {exc!r}\n{traceback.format_exc()}")
            try:
                self.stop_all("its pipeline's controller crashed")
                self.drain(time.monotonic() + 10)
            except Exception:  # noqa: BLE001 - going down anyway; the status says why
                pass
            final, error = RunStatus.FAILED, f"pipeline controller crashed: {exc!r}"
        self.finish(final, error)
        return final

    def loop(self) -> None:
        while True:
            if not self.canceled and self._cancel_requested():
                self.canceled = True
                self.say("canceled: stopping the running steps, skipping the rest")
                self.stop_all(f"canceled with its pipeline {self.id}")
                for st in self.states.values():
                    if st.status == NOT_STARTED:
                        self.skip(st, "its pipeline was canceled")
            self.poll()
            if not self.canceled:
                self.fill()
            if all(st.finished for st in self.states.values()):
                return
            if self.canceled and self.gave_up_waiting():
                return
            self.write_steps()
            time.sleep(self.tick)

    def drain(self, deadline: float) -> None:
        while any(st.run is not None and not st.finished for st in self.states.values()) \
                and time.monotonic() < deadline:
            self.poll()
            time.sleep(self.tick)

    def gave_up_waiting(self) -> bool:
        now = time.monotonic()
        waiting = [st for st in self.states.values() if not st.finished]
        if waiting and all(st.stop_asked is not None and now - st.stop_asked > STOP_TIMEOUT
                           for st in waiting):
            for st in waiting:
                self.say(f"step {st.step.name} ({st.run_id}) did not end {STOP_TIMEOUT:g}s "
                         "after it was canceled; leaving it")
            return True
        return False

    def fill(self) -> None:
        """Start every step whose inputs are ready, up to max_concurrent_steps running."""
        failed = next((st for st in self.states.values() if st.finished and not st.ended_ok
                       and st.status != SKIPPED), None)
        for st in self.states.values():
            if st.status != NOT_STARTED:
                continue
            if failed is not None and not self.config.continue_on_step_failure:
                self.skip(st, f"skipped: step {failed.step.name!r} {failed.status} and "
                              "continue_on_step_failure is false")
                continue
            deps = [self.states[d] for d in st.step.depends_on]
            broken = [d for d in deps if d.finished and not d.ended_ok]
            if broken:
                d = broken[0]
                self.skip(st, f"skipped: step {d.step.name!r} {d.status}")
                continue
            if not all(d.ended_ok for d in deps):
                continue
            running = sum(1 for s in self.states.values()
                          if s.status != NOT_STARTED and not s.finished)
            if running >= self.config.max_concurrent_steps:
                return
            self.start(st)

    def skip(self, st: StepState, reason: str) -> None:
        st.status, st.reason, st.ended = SKIPPED, reason, protocol.utcnow()
        self._dirty = True
        self.say(f"step {st.step.name}: {reason}")

    def poll(self) -> None:
        for st in self.states.values():
            if st.run is None or st.finished or not st.watch.changed():
                continue
            try:
                status = st.run.status()
            except ComputeError as exc:  # a host that dropped: try again next tick
                self.say(f"cannot read step {st.step.name} ({st.run_id}): {exc}")
                continue
            if status.value != st.status:
                st.status = status.value
                st.started = st.run.record.started
                self._dirty = True
            if status.is_terminal():
                self.ended(st, status)

    # -- a step ------------------------------------------------------------------------

    def start(self, st: StepState) -> None:
        step = st.step
        self._dirty = True
        try:
            inputs, values, placed = self.resolve_inputs(step)
            st.key = self.step_key(step, inputs)
            if self.reuse and step.allow_reuse and self.try_reuse(st):
                return
            self.submit(st, values, placed)
        except (ComputeError, OSError, ValueError) as exc:  # this step fails, not the rest
            st.status, st.reason, st.ended = RunStatus.FAILED.value, str(exc), protocol.utcnow()
            self.say(f"step {step.name} could not start: {exc}")

    def close(self) -> None:
        """Close the log (a controller made in the client, for ``all_reused``)."""
        os.close(self._log)

    def step_key(self, step: Step, inputs: dict[str, Any]) -> str:
        """The reuse key: what decides the step's result (see ``reuse``)."""
        prepared = self.prepared[step.name]
        return reuse.key({
            "code": prepared.get("snapshot"), "kind": step.kind, "command": step.command,
            "script": step.script, "arguments": step.arguments,
            "parameters": step.parameters, "kernel": step.kernel,
            "environment": prepared.get("environment"),
            "environment_variables": step.environment_variables,
            "target_kind": prepared.get("target_kind"), "inputs": inputs,
            "outputs": sorted(step.outputs), "sweep": step.sweep})

    def all_reused(self) -> bool:
        """An unchanged rerun, done at once: if every step can be reused, record that and
        end the pipeline Completed here (no controller process to start); else change
        nothing and return False."""
        if not self.reuse:
            return False
        self._held = []
        try:
            for st in self.states.values():  # in topological order: inputs come first
                st.key = self.step_key(st.step, self.resolve_inputs(st.step)[0])
                if not (st.step.allow_reuse and self.try_reuse(st)):
                    return False
        except (ComputeError, OSError, ValueError):
            return False
        finally:
            held, self._held = self._held, None
        self.set_status(RunStatus.RUNNING, started=protocol.utcnow())
        for line in held:
            self.say(line)
        self.finish(RunStatus.COMPLETED, None)
        return True

    def resolve_inputs(self, step: Step) -> tuple[dict[str, Any], dict[str, Any],
                                                  dict[str, dict[str, list[Any]]]]:
        """What the step's inputs are: (for the reuse key, for substitution, their files
        by the folder they go to)."""
        keyed: dict[str, Any] = {}
        values: dict[str, Any] = {}
        placed: dict[str, dict[str, list[Any]]] = {}
        for name, binding in step.inputs.items():
            if "literal" in binding:
                keyed[name] = {"literal": binding["literal"]}
                values[name] = binding["literal"]
                continue
            if "step" in binding:
                files = self.states[binding["step"]].outputs.get(binding["output"], {})
                file_name = None
            else:
                files, file_name = data.from_path(Path(binding["path"]), self.store)
            where = f"{data.INPUTS}/{name}"
            keyed[name] = {"files": data.digest(files)}
            values[name] = f"{where}/{file_name}" if file_name else where
            placed[where] = files
        return keyed, values, placed

    def try_reuse(self, st: StepState) -> bool:
        assert st.key is not None
        found = reuse.lookup(self.ws.dir, st.key)
        if found is None:
            return False
        try:
            record = self.ws.store.get(found["run_id"])
        except ComputeError:  # the run was deleted: run the step again
            return False
        outputs = found.get("outputs") or {}
        if record.status != RunStatus.COMPLETED.value or any(
                data.missing(files, self.store) for files in outputs.values()):
            return False
        st.status, st.run_id, st.reused, st.outputs = (RunStatus.COMPLETED.value, record.id,
                                                       True, outputs)
        st.reason = f"reused: unchanged since {record.id}"
        st.started, st.ended = record.started, record.ended
        self.say(f"step {st.step.name} reused {record.id}: nothing changed")
        return True

    def submit(self, st: StepState, values: dict[str, Any],
               placed: dict[str, dict[str, list[Any]]]) -> None:
        from jupyter_compute.agent import materialize
        from jupyter_compute.attached import get_target
        from jupyter_compute.runs import Run
        from jupyter_compute.runspec import resolve_spec

        step = st.step
        prepared = self.prepared[step.name]
        folder = self.dir / "steps" / step.name
        folder.mkdir(parents=True, exist_ok=True)
        materialize(prepared.get("files") or {}, str(self.ws.blobs_dir), str(folder))
        data.place_inputs(placed, str(self.ws.blobs_dir), folder)
        # Azure makes output folders before the step runs (a command's '> out/x' needs
        # one); outputs/ is never part of a snapshot, so these come as extra files.
        extra = {f"{data.OUTPUTS}/{o}/{data.MARKER}": b"" for o in step.outputs}
        outputs = {o: f"{data.OUTPUTS}/{o}" for o in step.outputs}
        common: dict[str, Any] = dict(
            target=step.target, name=step.name, source_dir=folder, parent_id=self.id,
            extra_files=extra or None, environment=prepared.get("environment"),
            environment_variables=step.environment_variables or None,
            max_run_duration_seconds=step.timeout)
        if step.kind == "command":
            spec = resolve_spec(None, command=self.command_line(step, values, outputs),
                                **common)
        elif step.kind == "script":
            spec = resolve_spec(step.script, arguments=[
                fill(a, values, outputs) for a in step.arguments], **common)
        elif step.kind == "notebook":
            params = {k: fill(v, values, outputs) if isinstance(v, str) else v
                      for k, v in step.parameters.items()}
            spec = resolve_spec(step.script, parameters={**values, **outputs, **params},
                                kernel=step.kernel, **common)
        else:
            run = self.submit_sweep(step, folder, values)
            st.run, st.run_id, st.status = run, run.id, run.record.status
            st.watch = FolderWatch(self.ws.run_dir(run.id))  # its controller runs here
            self.say(f"step {step.name} started as sweep {run.id} on {step.target}")
            return
        if spec.target not in self._targets:  # targets.yml is read once, not per step
            self._targets[spec.target] = get_target(spec.target, self.ws)
        run = Run.submit(self._targets[spec.target], spec)
        st.run, st.run_id, st.status = run, run.id, run.record.status
        if self.prepared[step.name].get("folders_here"):
            st.watch = FolderWatch(self.ws.run_dir(run.id))
        self.say(f"step {step.name} started as {run.id} on {step.target}")

    def submit_sweep(self, step: Step, folder: Path, values: dict[str, Any]) -> Run:
        """A sweep step: Azure's sweep job (``jobfile``) with the step's inputs as files
        inside its code folder; its outputs are, at the end, its best trial's."""
        import yaml

        from jupyter_compute.jobfile import submit_job

        assert step.sweep is not None
        inputs: dict[str, Any] = {}
        for name, binding in step.inputs.items():
            if "literal" in binding:
                inputs[name] = binding["literal"]
                continue
            inputs[name] = {"type": "uri_folder", "path": str(folder / values[name])}
        job = {k: v for k, v in step.sweep.items()}
        job["trial"] = {**job["trial"], "code": str(folder)}
        job.update(type="sweep", compute=step.target, inputs=inputs,
                   outputs={o: {"type": "uri_folder"} for o in step.outputs},
                   display_name=step.name)
        path = self.dir / "steps" / f"{step.name}.sweep.yml"
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        run: Run = submit_job(path, workspace=self.ws, say=self.say)
        self.ws.store.update(run.id, parent_id=self.id)  # a step of this pipeline
        return run

    def command_line(self, step: Step, values: dict[str, Any], outputs: dict[str, str]) -> str:
        from jupyter_compute.azureml import substitute

        bindings = {f"inputs.{k}": str(v) for k, v in values.items()}
        bindings.update({f"outputs.{k}": v for k, v in outputs.items()})
        for name, binding in self.config.inputs.items():
            if "literal" in binding:
                bindings[f"parent.inputs.{name}"] = str(binding["literal"])
        assert step.command is not None
        return substitute(step.command, bindings)

    def ended(self, st: StepState, status: RunStatus) -> None:
        assert st.run is not None
        record = st.run.record
        st.started, st.ended = record.started, record.ended or protocol.utcnow()
        self._dirty = True
        if status is RunStatus.COMPLETED:
            try:
                source = st.run
                if st.step.kind == "sweep":  # a sweep's outputs are its best trial's
                    best = getattr(st.run, "best_run", lambda: None)()
                    source = best if best is not None else st.run
                folder = source.target.outputs_dir(source.id)
                st.outputs = {o: data.harvest(folder / o, self.store) for o in st.step.outputs}
            except (ComputeError, OSError) as exc:
                st.status, st.reason = RunStatus.FAILED.value, f"its outputs: {exc}"
                self.say(f"step {st.step.name} ({st.run_id}): cannot read its outputs: {exc}")
                return
            if st.key:  # written after the dependents start: not on the hand-off's path
                self._remember.append((st.key, {
                    "run_id": st.run_id, "step": st.step.name, "pipeline": self.id,
                    "outputs": st.outputs}))
            sizes = ", ".join(f"{o}: {len(f)} files" for o, f in st.outputs.items())
            self.say(f"step {st.step.name} ({st.run_id}) Completed"
                     + (f" ({sizes})" if sizes else ""))
        else:
            st.reason = record.error
            self.say(f"step {st.step.name} ({st.run_id}) {status.value}"
                     + (f": {record.error}" if record.error else ""))

    def stop_all(self, reason: str) -> None:
        for st in self.states.values():
            if st.run is not None and not st.finished and st.stop_asked is None:
                st.stop_asked = time.monotonic()
                try:
                    st.run.cancel(reason)
                except ComputeError as exc:
                    self.say(f"could not cancel step {st.step.name}: {exc}")

    # -- the end -----------------------------------------------------------------------

    def outcome(self) -> tuple[RunStatus, str | None]:
        if self.canceled:
            return RunStatus.CANCELED, "canceled by request"
        bad = [st for st in self.states.values()
               if st.finished and not st.ended_ok and st.status != SKIPPED]
        if bad:
            skipped = [st.step.name for st in self.states.values() if st.status == SKIPPED]
            first = (bad[0].reason or "").strip().splitlines()
            error = f"step {bad[0].step.name!r} {bad[0].status}" + (
                f": {first[-1]}" if first else "")
            if len(bad) > 1:
                error += f"; also {', '.join(st.step.name for st in bad[1:])}"
            if skipped:
                error += f"; skipped: {', '.join(skipped)}"
            return RunStatus.FAILED, error
        return RunStatus.COMPLETED, None

    def finish(self, status: RunStatus, error: str | None) -> None:
        if status is RunStatus.COMPLETED:
            self.publish_outputs()
        counts: dict[str, int] = {}
        for st in self.states.values():
            label = "reused" if st.reused else st.status
            counts[label] = counts.get(label, 0) + 1
        self.say("done: " + ", ".join(f"{n} {k}" for k, n in counts.items())
                 + (f"; {status.value}: {error}" if error else f"; {status.value}"))
        self._dirty = True
        self.write_steps()  # on disk before the status turns terminal
        self.set_status(status, ended=protocol.utcnow(), exit_code=None, error=error)

    def publish_outputs(self) -> None:
        """The pipeline's own ``outputs:``: the bound steps' files, in its outputs/."""
        from jupyter_compute.agent import materialize

        for name, source in self.config.outputs.items():
            files = self.states[source["step"]].outputs.get(source["output"], {})
            materialize(files, str(self.ws.blobs_dir), str(self.dir / protocol.OUTPUTS / name))

    def _on_sigterm(self, *_: Any) -> None:
        self._stop_signal = True

    def _cancel_requested(self) -> bool:
        return self._stop_signal or (self.dir / protocol.CANCEL).exists()


def fill(text: str, values: dict[str, Any], outputs: dict[str, str]) -> str:
    """An argument (an argv item, or a notebook parameter) with its ``${{inputs.X}}`` and
    ``${{outputs.Y}}`` replaced by the plain values: no shell reads it, so nothing is
    quoted (a command line goes through ``azureml.substitute``, which quotes)."""
    from jupyter_compute.azureml import substitute

    bindings = {f"inputs.{k}": str(v) for k, v in values.items()}
    bindings.update({f"outputs.{k}": v for k, v in outputs.items()})
    if "${{" not in text:
        return text
    # substitute() quotes every value for a shell; one shell word back is the value
    words = shlex.split(substitute(text, bindings))
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m jupyter_compute.pipeline.controller PIPELINE_DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m jupyter_compute.pipeline.controller PIPELINE_DIR",
              file=sys.stderr)
        return 2
    return 0 if Controller(args[0]).run() is RunStatus.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
