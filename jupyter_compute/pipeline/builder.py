"""Pipelines in Python: a builder, and a decorator close to Azure's ``@dsl.pipeline``.

::

    from jupyter_compute.pipeline import PipelineBuilder, command, pipeline, Input

    b = PipelineBuilder("flow", compute="local")
    prep = b.command("prep", code="prep", outputs=["clean"],
                     command="python prep.py --out ${{outputs.clean}}")
    b.command("train", code="train", compute="docker", inputs={"data": prep.outputs.clean},
              command="python train.py --data ${{inputs.data}}")
    b.submit(wait=True)

    # the same, Azure's way: components called inside a decorated function
    prep = command(code="prep", command="python prep.py --n ${{inputs.n}} "
                   "--out ${{outputs.clean}}", inputs=["n"], outputs=["clean"])
    train = command(code="train", command="python train.py --data ${{inputs.data}}",
                    inputs=["data"], outputs=["model"])

    @pipeline(compute="local")
    def flow(n):
        cleaned = prep(n=n)
        trained = train(data=cleaned.outputs.clean)
        return {"model": trained.outputs.model}

    flow(n=3).submit(wait=True)

Both build the mapping of the YAML form (``to_mapping()``, ``to_yaml(path)``), so
a pipeline made in Python is checked as a file is, and can be saved as one.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_compute.exceptions import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from jupyter_compute.pipeline.config import PipelineConfig
    from jupyter_compute.pipeline.handle import Pipeline
    from jupyter_compute.workspace import Workspace

_active = threading.local()


@dataclass(frozen=True)
class Input:
    """A file or folder of the workspace as an input (Azure's ``Input``)."""

    path: str
    type: str = "uri_folder"

    def to_yaml(self) -> dict[str, Any]:
        return {"type": self.type, "path": str(self.path)}


@dataclass(frozen=True)
class OutputRef:
    """Output ``name`` of step ``step``: bind it to another step's input."""

    step: str
    name: str

    def to_yaml(self) -> str:
        return f"${{{{parent.jobs.{self.step}.outputs.{self.name}}}}}"


@dataclass(frozen=True)
class ParentInput:
    """An input of the pipeline, inside a ``@pipeline`` function."""

    name: str

    def to_yaml(self) -> str:
        return f"${{{{parent.inputs.{self.name}}}}}"


class _Outputs:
    def __init__(self, step: str, names: list[str]) -> None:
        self._step, self._names = step, names

    def __getattr__(self, name: str) -> OutputRef:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._names:
            raise UsageError(f"step {self._step!r} has no output {name!r} (outputs: "
                             f"{', '.join(self._names) or 'none'})")
        return OutputRef(self._step, name)

    def __getitem__(self, name: str) -> OutputRef:
        return self.__getattr__(name)


@dataclass
class StepNode:
    """A step added to a builder; ``node.outputs.NAME`` feeds another step."""

    name: str
    output_names: list[str] = field(default_factory=list)

    @property
    def outputs(self) -> _Outputs:
        return _Outputs(self.name, self.output_names)


def _yaml_value(value: Any) -> Any:
    if isinstance(value, (Input, OutputRef, ParentInput)):
        return value.to_yaml()
    if isinstance(value, StepNode):
        if len(value.output_names) != 1:
            raise UsageError(f"step {value.name!r} has {len(value.output_names)} outputs: "
                             "pick one with .outputs.NAME")
        return OutputRef(value.name, value.output_names[0]).to_yaml()
    if isinstance(value, Path):
        return Input(str(value)).to_yaml()
    return value


class PipelineBuilder:
    """A pipeline put together step by step; ``submit()`` starts it."""

    def __init__(self, name: str | None = None, *, compute: str | None = None,
                 max_concurrent_steps: int | None = None,
                 folder: str | Path | None = None) -> None:
        self.name = name
        self.compute = compute
        self.max_concurrent_steps = max_concurrent_steps
        self.folder = Path(folder or Path.cwd()).absolute()
        self.inputs: dict[str, Any] = {}
        self.outputs: dict[str, OutputRef] = {}
        self.jobs: dict[str, dict[str, Any]] = {}

    def add(self, name: str, *, command: str | None = None, script: str | None = None,
            arguments: list[Any] | None = None, notebook: str | None = None,
            code: str | Path | None = None, compute: str | None = None,
            environment: Any = None, inputs: dict[str, Any] | None = None,
            outputs: list[str] | None = None, parameters: dict[str, Any] | None = None,
            allow_reuse: bool = True,
            environment_variables: dict[str, str] | None = None) -> StepNode:
        """Add a step (a ``command``, a ``script`` + ``arguments``, or a ``notebook``)."""
        if name in self.jobs:
            raise UsageError(f"the pipeline has a step {name!r} already; name steps apart")
        job: dict[str, Any] = {"type": "notebook" if notebook else "command"}
        for key, value in (("code", str(code) if code is not None else None),
                           ("command", command), ("script", script), ("notebook", notebook),
                           ("compute", compute), ("environment", environment),
                           ("parameters", parameters),
                           ("environment_variables", environment_variables)):
            if value is not None:
                job[key] = value
        if arguments is not None:
            job["arguments"] = [_yaml_value(a) for a in arguments]
        if inputs:
            job["inputs"] = {k: _yaml_value(v) for k, v in inputs.items()}
        job["outputs"] = {o: {"type": "uri_folder"} for o in outputs or []}
        if not allow_reuse:
            job["allow_reuse"] = False
        self.jobs[name] = job
        return StepNode(name, list(outputs or []))

    command = add

    def output(self, name: str, source: OutputRef) -> None:
        """Make step output ``source`` the pipeline's output ``name`` (its outputs/NAME)."""
        self.outputs[name] = source
        self.jobs[source.step]["outputs"][source.name] = f"${{{{parent.outputs.{name}}}}}"

    def to_mapping(self) -> dict[str, Any]:
        """The pipeline in Azure ML v2 YAML form."""
        doc: dict[str, Any] = {"type": "pipeline"}
        if self.name:
            doc["name"] = self.name
        if self.inputs:
            doc["inputs"] = {k: _yaml_value(v) for k, v in self.inputs.items()}
        if self.outputs:
            doc["outputs"] = {k: {"type": "uri_folder"} for k in self.outputs}
        settings: dict[str, Any] = {}
        if self.compute:
            settings["default_compute"] = self.compute
        if self.max_concurrent_steps:
            settings["max_concurrent_steps"] = self.max_concurrent_steps
        if settings:
            doc["settings"] = settings
        doc["jobs"] = self.jobs
        return doc

    def to_yaml(self, path: str | Path) -> Path:
        """Save as a YAML file that ``jupyter-compute pipeline FILE`` runs (paths stay
        relative to the builder's folder: save it there)."""
        import yaml

        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_mapping(), sort_keys=False))
        return path

    def config(self, workspace: Workspace | None = None) -> PipelineConfig:
        """The checked pipeline (targets checked against ``workspace``'s, if given)."""
        from jupyter_compute.pipeline.config import from_mapping

        targets = None
        if workspace is not None:
            from jupyter_compute.attached import attached_targets

            targets = set(attached_targets(workspace))
        return from_mapping(self.to_mapping(), folder=self.folder, targets=targets,
                            name=self.name)

    def submit(self, *, name: str | None = None, reuse: bool = True,
               workspace: Workspace | str | Path | None = None,
               wait: bool = False) -> Pipeline:
        """Check and start the pipeline; returns its ``Pipeline`` at once (or at its end
        with ``wait=True``)."""
        from jupyter_compute.pipeline.handle import submit
        from jupyter_compute.workspace import Workspace
        from jupyter_compute.workspace import find as find_workspace

        ws = workspace if isinstance(workspace, Workspace) else \
            find_workspace(start=self.folder, explicit=workspace)
        return submit(self.config(ws), name=name, reuse=reuse, workspace=ws, wait=wait)

    @contextlib.contextmanager
    def active(self) -> Iterator[PipelineBuilder]:
        """Within: components called add their steps to this builder."""
        previous = getattr(_active, "builder", None)
        _active.builder = self
        try:
            yield self
        finally:
            _active.builder = previous


@dataclass
class Component:
    """A step template (Azure's command component): call it inside a ``@pipeline``
    function, with its inputs, to add a step."""

    fields: dict[str, Any]
    name: str
    inputs: list[str]
    outputs: list[str]

    def __call__(self, **inputs: Any) -> StepNode:
        builder: PipelineBuilder | None = getattr(_active, "builder", None)
        if builder is None:
            raise UsageError(f"component {self.name!r} adds a step to a pipeline: call it "
                             "inside a function decorated with @pipeline")
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown and self.inputs:
            raise UsageError(f"component {self.name!r} has no input {unknown[0]!r} (inputs: "
                             f"{', '.join(self.inputs)})")
        name, n = self.name, 2
        while name in builder.jobs:  # the same component twice: prep, prep_2
            name, n = f"{self.name}_{n}", n + 1
        return builder.add(name, inputs=inputs, outputs=self.outputs, **self.fields)


def command(*, command: str | None = None, code: str | Path | None = None,
            script: str | None = None, arguments: list[Any] | None = None,
            inputs: list[str] | dict[str, Any] | None = None,
            outputs: list[str] | None = None, environment: Any = None,
            compute: str | None = None, name: str | None = None, allow_reuse: bool = True,
            environment_variables: dict[str, str] | None = None) -> Component:
    """A command component (Azure's ``command(...)``): ``command`` is a shell line with
    ``${{inputs.X}}`` and ``${{outputs.Y}}``."""
    label = name or (Path(str(code)).name if code else "step")
    return Component({"command": command, "code": code, "script": script,
                      "arguments": arguments, "environment": environment,
                      "compute": compute, "allow_reuse": allow_reuse,
                      "environment_variables": environment_variables},
                     label.replace(".", "_"), list(inputs or []), list(outputs or []))


def notebook(path: str, *, code: str | Path | None = None,
             inputs: list[str] | None = None, outputs: list[str] | None = None,
             parameters: dict[str, Any] | None = None, environment: Any = None,
             compute: str | None = None, name: str | None = None,
             allow_reuse: bool = True) -> Component:
    """A notebook component: papermill runs ``path`` with its inputs as parameters."""
    label = name or Path(path).stem
    return Component({"notebook": path, "code": code if code is not None else ".",
                      "parameters": parameters, "environment": environment,
                      "compute": compute, "allow_reuse": allow_reuse},
                     label.replace(".", "_"), list(inputs or []), list(outputs or []))


def pipeline(func: Callable[..., Any] | None = None, *, name: str | None = None,
             compute: str | None = None, max_concurrent_steps: int | None = None,
             folder: str | Path | None = None) -> Any:
    """Decorate a function that calls components; calling it gives a ``PipelineBuilder``
    (``.submit()`` it). Its parameters become the pipeline's inputs; a returned
    ``{name: step.outputs.x}`` becomes the pipeline's outputs."""

    def wrap(f: Callable[..., Any]) -> Callable[..., PipelineBuilder]:
        @functools.wraps(f)
        def build(*args: Any, **kwargs: Any) -> PipelineBuilder:
            bound = inspect.signature(f).bind(*args, **kwargs)
            bound.apply_defaults()
            builder = PipelineBuilder(name or f.__name__, compute=compute,
                                      max_concurrent_steps=max_concurrent_steps,
                                      folder=folder)
            builder.inputs = dict(bound.arguments)
            with builder.active():
                result = f(**{p: ParentInput(p) for p in bound.arguments})
            if isinstance(result, dict):
                for out_name, ref in result.items():
                    if not isinstance(ref, OutputRef):
                        raise UsageError(f"pipeline output {out_name!r} must be a step's "
                                         "output (step.outputs.NAME)")
                    builder.output(out_name, ref)
            return builder

        return build

    return wrap(func) if func is not None else wrap
