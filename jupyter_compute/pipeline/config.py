"""A pipeline's definition: Azure ML v2 pipeline-job YAML (and ours), checked.

::

    cfg = load_pipeline("pipeline.yml", targets={"local", "docker"},
                        overrides={"inputs.epochs": "3"})
    [s.name for s in cfg.ordered()]       # ['prep', 'train', 'eval']
    cfg.steps["train"].depends_on          # ['prep']

The file, in Azure's form::

    type: pipeline
    inputs:
      raw: {type: uri_folder, path: ./data}
      epochs: 2
    settings: {default_compute: azureml:local, max_concurrent_steps: 2}
    jobs:
      prep:
        type: command
        code: ./prep
        command: python prep.py --raw ${{inputs.raw}} --out ${{outputs.clean}}
        inputs: {raw: ${{parent.inputs.raw}}}
        outputs: {clean: {type: uri_folder}}
      train:
        type: command
        code: ./train
        compute: azureml:docker
        command: python train.py --data ${{inputs.data}} > ${{outputs.model}}/model.txt
        inputs: {data: ${{parent.jobs.prep.outputs.clean}}}
        outputs: {model: {type: uri_folder}}

Besides ``command:``, a ``type: command`` step may give our ``script:`` +
``arguments:`` (an argument list, never a shell); a ``type: notebook`` step gives
``notebook:`` (papermill parameters come from its inputs and ``parameters:``), and a
``type: sweep`` step gives Azure's ``trial``/``search_space``/``objective``/``limits``.

Every error is one line naming the file, the line and the step:
``pipeline.yml:14: step 'train': input 'data' binds to unknown step 'prepp' — did you
mean 'prep'? (steps: prep, eval)``.
"""

from __future__ import annotations

import copy
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_compute.config import _Located, unknown
from jupyter_compute.exceptions import ConfigError
from jupyter_compute.pipeline import graph

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Collection
    from typing import Any

#: Step kinds (``kind`` of a step): what runs.
KINDS = ("command", "script", "notebook", "sweep")
#: Azure keys read elsewhere or of no meaning here: accepted, ignored.
_IGNORED = {"$schema", "display_name", "description", "tags", "properties",
            "experiment_name", "identity", "services", "resources", "distribution",
            "is_deterministic", "version"}
_TOP = {"type", "name", "inputs", "outputs", "settings", "jobs"} | _IGNORED
_SETTINGS = {"default_compute", "default_datastore", "default_environment",
             "continue_on_step_failure", "force_rerun", "max_concurrent_steps"}
_STEP_COMMON = {"type", "name", "code", "environment", "compute", "inputs", "outputs",
                "allow_reuse", "environment_variables", "limits", "component"} | _IGNORED
#: What a command component file (``component: ./train.yml``) may hold.
_COMPONENT = {"type", "name", "code", "environment", "command", "inputs", "outputs",
              "environment_variables"} | _IGNORED
_STEP_KEYS = {
    "command": _STEP_COMMON | {"command", "script", "arguments"},
    "notebook": _STEP_COMMON | {"notebook", "parameters", "kernel"},
    "sweep": _STEP_COMMON | {"trial", "search_space", "sampling_algorithm", "objective",
                             "early_termination", "command", "script", "arguments"},
}
#: A whole value that is one binding: ``${{parent.jobs.S.outputs.O}}`` and kin.
_BINDING = re.compile(r"^\s*\$\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}\s*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,62}$")
_OPTIONAL = re.compile(r"\$\[\[.*?\]\]", re.DOTALL)  # Azure's optional part of a command
DEFAULT_CONCURRENCY = 4


@dataclass
class Step:
    """One step, resolved: where and what it runs, what it reads and writes.

    ``inputs`` maps each name to ``{"literal": value}``, ``{"path": absolute}`` (a file
    or folder of the workspace) or ``{"step": S, "output": O}`` (another step's output).
    """

    name: str
    kind: str                              # command | script | notebook | sweep
    code: str | None                       # absolute folder; None: no code
    target: str
    command: str | None = None             # a command line (``${{…}}`` not yet substituted)
    script: str | None = None              # script or notebook, relative to ``code``
    arguments: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)  # a notebook's fixed ones
    kernel: str | None = None
    environment: Any = None                # as written: a name, ``azureml:…``, a mapping
    environment_variables: dict[str, str] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    allow_reuse: bool = True
    sweep: dict[str, Any] | None = None    # a sweep step's Azure keys
    timeout: float | None = None           # limits.timeout, seconds
    line: int | None = None

    @property
    def depends_on(self) -> list[str]:
        """The steps whose outputs this one reads, in the order its inputs name them."""
        seen: list[str] = []
        for binding in self.inputs.values():
            if "step" in binding and binding["step"] not in seen:
                seen.append(binding["step"])
        return seen

    def to_dict(self) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in vars(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        return cls(**data)


@dataclass
class PipelineConfig:
    """A whole pipeline: its steps in a topological order, its settings."""

    name: str | None
    steps: dict[str, Step]
    path: str | None = None                # the YAML file, for errors and the record
    folder: str = "."                      # relative paths are relative to this
    default_compute: str | None = None
    max_concurrent_steps: int = DEFAULT_CONCURRENCY
    force_rerun: bool = False
    #: Azure's setting: after a failure, start no other step (running ones finish).
    continue_on_step_failure: bool = True
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)  # name → step, output
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # the pipeline's own

    def ordered(self) -> list[Step]:
        return list(self.steps.values())

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "folder": self.folder,
                "default_compute": self.default_compute,
                "max_concurrent_steps": self.max_concurrent_steps,
                "force_rerun": self.force_rerun, "outputs": copy.deepcopy(self.outputs),
                "continue_on_step_failure": self.continue_on_step_failure,
                "inputs": copy.deepcopy(self.inputs),
                "steps": [s.to_dict() for s in self.steps.values()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        steps = {s["name"]: Step.from_dict(s) for s in data["steps"]}
        return cls(name=data.get("name"), steps=steps, path=data.get("path"),
                   folder=data.get("folder", "."), default_compute=data.get("default_compute"),
                   max_concurrent_steps=int(data.get("max_concurrent_steps")
                                            or DEFAULT_CONCURRENCY),
                   force_rerun=bool(data.get("force_rerun")),
                   continue_on_step_failure=data.get("continue_on_step_failure") is not False,
                   outputs=data.get("outputs") or {}, inputs=data.get("inputs") or {})


def load_pipeline(path: str | Path, *, targets: Collection[str] | None = None,
                  overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and check a pipeline YAML; raise ``ConfigError`` naming file, line and step.

    ``targets``: the attached target names (an unknown ``compute`` is an error);
    ``overrides``: ``{"inputs.epochs": "3", "settings.default_compute": "docker"}``
    (``--set``), applied before anything is checked; values are read as YAML.

    >>> load_pipeline("pipeline.yml", targets={"local"}).steps["train"].depends_on
    ['prep']
    """
    doc = _Located(Path(path))
    if overrides:
        _apply_overrides(doc, overrides)
    return _Parser(doc, Path(path).absolute().parent, targets).parse()


def from_mapping(data: dict[str, Any], *, folder: str | Path = ".",
                 targets: Collection[str] | None = None, name: str | None = None
                 ) -> PipelineConfig:
    """The same checks for a pipeline given as a mapping (the Python builder's form)."""
    doc = _Plain(data)
    cfg = _Parser(doc, Path(folder).absolute(), targets).parse()
    cfg.name = name or cfg.name
    return cfg


class _Plain(_Located):
    """A mapping given in Python: the same checks, without file or line."""

    def __init__(self, data: Any) -> None:  # noqa: D107 - no file to read
        self.path = None  # type: ignore[assignment]
        self.data = data
        self.lines = {}


def _apply_overrides(doc: _Located, overrides: dict[str, Any]) -> None:
    import yaml

    for key, raw in overrides.items():
        parts = [p for p in str(key).split(".") if p]
        if not parts:
            raise ConfigError(f"--set {key}={raw}: give a dotted key, like inputs.epochs=3",
                              path=doc.path)
        value = yaml.safe_load(raw) if isinstance(raw, str) else raw
        node = doc.data
        for part in parts[:-1]:
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a mapping in the file",
                                  path=doc.path)
            node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: its parent is not a mapping in the file",
                              path=doc.path)
        old = node.get(parts[-1])
        if isinstance(old, dict) and not isinstance(value, dict) and (
                "path" in old or "default" in old or "value" in old):
            old = dict(old)  # a typed input keeps its type: set its path or value
            old["path" if "path" in old else "default" if "default" in old else "value"] = value
            value = old
        node[parts[-1]] = value


class _Parser:
    def __init__(self, doc: _Located, folder: Path, targets: Collection[str] | None) -> None:
        self.doc = doc
        self.folder = folder
        self.targets = targets

    def fail(self, message: str, *keys: str, step: str | None = None) -> ConfigError:
        line = None
        for n in range(len(keys), 0, -1):  # the most precise line the file has
            line = self.doc.line(*keys[:n])
            if line:
                break
        prefix = f"step {step!r}: " if step else ""
        return ConfigError(prefix + message, path=self.doc.path, line=line)

    def parse(self) -> PipelineConfig:
        data = self.doc.data
        if not isinstance(data, dict):
            raise self.fail("expected a mapping with 'type: pipeline' and 'jobs:'")
        for key in data:
            if key not in _TOP:
                raise self.fail(unknown("key", str(key), _TOP - _IGNORED), str(key))
        kind = data.get("type", "pipeline")
        if kind != "pipeline":
            raise self.fail(f"type is {kind!r}, not 'pipeline'; run a {kind} job with "
                            "'jupyter-compute job FILE'", "type")
        settings = data.get("settings") or {}
        if not isinstance(settings, dict):
            raise self.fail("settings must be a mapping", "settings")
        for key in settings:
            if key not in _SETTINGS:
                raise self.fail(unknown("setting", str(key), _SETTINGS), "settings", str(key))
        default_compute = settings.get("default_compute")
        if default_compute is not None:
            default_compute = self.target(default_compute, ("settings", "default_compute"))
        concurrency = settings.get("max_concurrent_steps", DEFAULT_CONCURRENCY)
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise self.fail(f"max_concurrent_steps must be a whole number above 0, got "
                            f"{concurrency!r}", "settings", "max_concurrent_steps")
        self.parent_inputs = self.pipeline_inputs(data.get("inputs") or {})
        jobs = data.get("jobs")
        if not isinstance(jobs, dict) or not jobs:
            raise self.fail("a pipeline needs 'jobs:', a mapping of step names to steps",
                            "jobs")
        self.step_names = [str(n) for n in jobs]
        steps: dict[str, Step] = {}
        for name, raw in jobs.items():
            steps[str(name)] = self.step(str(name), raw, default_compute)
            if steps[str(name)].environment is None:  # settings.default_environment
                steps[str(name)].environment = settings.get("default_environment")
        self.check_bindings(steps)
        outputs = self.pipeline_outputs(data.get("outputs") or {}, steps)
        try:
            names = graph.order(steps, {s.name: s.depends_on for s in steps.values()})
        except graph.Cycle as cycle:
            first = cycle.path[0]
            raise self.fail(f"the steps form a cycle: {' → '.join(cycle.path)}; a step cannot "
                            "read its own output, even through others", "jobs", first,
                            "inputs", step=first) from None
        return PipelineConfig(
            name=str(data.get("display_name") or data.get("name") or "") or None,
            steps={n: steps[n] for n in names},
            path=str(self.doc.path) if self.doc.path else None, folder=str(self.folder),
            default_compute=default_compute, max_concurrent_steps=concurrency,
            force_rerun=bool(settings.get("force_rerun")), outputs=outputs,
            continue_on_step_failure=settings.get("continue_on_step_failure") is not False,
            inputs=self.parent_inputs)

    # -- pieces ------------------------------------------------------------------------

    def target(self, value: Any, keys: tuple[str, ...], step: str | None = None) -> str:
        from jupyter_compute.azureml import compute_name

        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"compute must be a target name, got {value!r}", *keys, step=step)
        name = compute_name(value.strip())
        if self.targets is not None and name not in self.targets:
            close = difflib.get_close_matches(name, list(self.targets), n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            raise self.fail(f"no target named {name!r}{hint} (attached: "
                            f"{', '.join(sorted(self.targets))}); attach it with "
                            "'jupyter-compute attach NAME --type KIND'", *keys, step=step)
        return name

    def path(self, value: Any, keys: tuple[str, ...], step: str | None) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(f"a path must be a string, got {value!r}", *keys, step=step)
        if value.startswith(("azureml:", "azureml://", "http://", "https://", "wasbs://",
                             "abfss://")):
            raise self.fail(f"{value!r} is a remote data asset; give a file or folder of the "
                            "workspace instead", *keys, step=step)
        path = (self.folder / Path(value).expanduser()).resolve()
        if not path.exists():
            raise self.fail(f"no file or folder {value!r} (looked for {path})", *keys,
                            step=step)
        return str(path)

    def pipeline_inputs(self, raw: Any) -> dict[str, dict[str, Any]]:
        if not isinstance(raw, dict):
            raise self.fail("inputs must be a mapping of names to values", "inputs")
        out = {}
        for name, value in raw.items():
            out[str(name)] = self.value(value, ("inputs", str(name)), None)
        return out

    def value(self, value: Any, keys: tuple[str, ...], step: str | None) -> dict[str, Any]:
        """An input's value: a literal, a typed path or literal, or a whole binding."""
        if isinstance(value, dict):
            kind = str(value.get("type") or "")
            if "path" in value or kind.startswith(("uri_", "mltable", "custom_model",
                                                    "mlflow_model")):
                if "path" not in value:
                    raise self.fail(f"a {kind or 'path'} input needs 'path:'", *keys, step=step)
                return self.value(value["path"], (*keys, "path"), step) \
                    if _BINDING.match(str(value["path"])) else \
                    {"path": self.path(value["path"], (*keys, "path"), step)}
            for key in ("default", "value"):
                if key in value:
                    return {"literal": value[key]}
            raise self.fail("a typed input needs 'path:' (a file or folder) or 'default:' "
                            "(a value)", *keys, step=step)
        if isinstance(value, str) and (m := _BINDING.match(value)):
            return self.binding(m.group(1), keys, step)
        if isinstance(value, (list, tuple)):
            raise self.fail("an input is one value (a number, a string, a path or a "
                            "binding), not a list", *keys, step=step)
        return {"literal": value}

    def binding(self, ref: str, keys: tuple[str, ...], step: str | None) -> dict[str, Any]:
        parts = ref.split(".")
        if parts[:2] == ["parent", "inputs"] and len(parts) == 3:
            if step is None:
                raise self.fail("a pipeline input cannot bind to another one", *keys)
            if parts[2] not in self.parent_inputs:
                raise self.fail(unknown("pipeline input", parts[2], self.parent_inputs)
                                + " — declare it under the pipeline's 'inputs:'",
                                *keys, step=step)
            return copy.deepcopy(self.parent_inputs[parts[2]])
        if parts[:2] == ["parent", "jobs"] and len(parts) == 5 and parts[3] == "outputs":
            if step is None:
                raise self.fail("a pipeline input cannot read a step's output", *keys)
            if parts[2] not in self.step_names:
                others = [n for n in self.step_names if n != step]
                close = difflib.get_close_matches(parts[2], others, n=1)
                hint = f" — did you mean {close[0]!r}?" if close else ""
                raise self.fail(f"input {keys[-1]!r} binds to unknown step {parts[2]!r}{hint} "
                                f"(steps: {', '.join(others) or 'none'})", *keys, step=step)
            return {"step": parts[2], "output": parts[4]}
        raise self.fail(f"cannot bind an input to ${{{{{ref}}}}}: use "
                        "${{parent.inputs.NAME}} or ${{parent.jobs.STEP.outputs.NAME}}",
                        *keys, step=step)

    def step(self, name: str, raw: Any, default_compute: str | None) -> Step:
        at = ("jobs", name)
        if not _NAME.match(name):
            raise self.fail("a step name is letters, digits, '_' and '-', starting with a "
                            "letter", *at, step=name)
        if not isinstance(raw, dict):
            raise self.fail("a step must be a mapping (type, code, command, …)", *at, step=name)
        if raw.get("component") is not None:
            raw = self.component(name, raw)
        kind = str(raw.get("type") or "command")
        if kind not in _STEP_KEYS:
            raise self.fail(unknown("step type", kind, _STEP_KEYS), *at, "type", step=name)
        for key in raw:
            if key not in _STEP_KEYS[kind]:
                raise self.fail(unknown("key", str(key), _STEP_KEYS[kind] - _IGNORED),
                                *at, str(key), step=name)
        code = raw.get("code")
        if kind == "sweep" and isinstance(raw.get("trial"), dict):
            code = raw["trial"].get("code", code)
        if code is not None:
            if not isinstance(code, str) or code.startswith("azureml:"):
                raise self.fail(f"code must be a folder of the workspace, got {code!r}",
                                *at, "code", step=name)
            folder = (self.folder / Path(code).expanduser()).resolve()
            if not folder.is_dir():
                what = "is a file, not a folder" if folder.exists() else "does not exist"
                raise self.fail(f"code folder {code!r} {what} (looked for {folder})",
                                *at, "code", step=name)
            code = str(folder)
        compute = raw.get("compute")
        target = self.target(compute, (*at, "compute"), name) if compute is not None \
            else default_compute or "local"
        step = Step(name=name, kind=kind, code=code, target=target, line=self.doc.line(*at),
                    environment=raw.get("environment"),
                    allow_reuse=bool(raw.get("allow_reuse", True)))
        if kind == "sweep" and isinstance(raw.get("trial"), dict):
            step.environment = raw["trial"].get("environment", step.environment)
        env_vars = raw.get("environment_variables") or {}
        if not isinstance(env_vars, dict):
            raise self.fail("environment_variables must be a mapping", *at,
                            "environment_variables", step=name)
        step.environment_variables = {str(k): str(v) for k, v in env_vars.items()}
        limits = raw.get("limits") or {}
        if kind != "sweep" and isinstance(limits, dict) and limits.get("timeout") is not None:
            step.timeout = float(limits["timeout"])
        self.what_runs(step, raw, at)
        inputs = raw.get("inputs") or {}
        if not isinstance(inputs, dict):
            raise self.fail("inputs must be a mapping of names to values", *at, "inputs",
                            step=name)
        for key, value in inputs.items():
            if not _NAME.match(str(key)):
                raise self.fail(f"input name {key!r} must be letters, digits, '_' and '-'",
                                *at, "inputs", str(key), step=name)
            step.inputs[str(key)] = self.value(value, (*at, "inputs", str(key)), name)
        outputs = raw.get("outputs") or {}
        if not isinstance(outputs, dict):
            raise self.fail("outputs must be a mapping of names (each a folder the step "
                            "writes)", *at, "outputs", step=name)
        step.outputs = [str(o) for o in outputs]
        for o in step.outputs:
            if not _NAME.match(o):
                raise self.fail(f"output name {o!r} must be letters, digits, '_' and '-'",
                                *at, "outputs", o, step=name)
        self.bound: dict[str, tuple[str, str]] = getattr(self, "bound", {})
        for o, value in outputs.items():
            if isinstance(value, str) and (m := _BINDING.match(value)):
                parts = m.group(1).split(".")
                if parts[:2] != ["parent", "outputs"] or len(parts) != 3:
                    raise self.fail(f"output {o!r} can bind only to ${{{{parent.outputs.NAME}}}}",
                                    *at, "outputs", str(o), step=name)
                if parts[2] in self.bound:
                    other = self.bound[parts[2]]
                    raise self.fail(f"output {o!r} binds pipeline output {parts[2]!r}, which "
                                    f"step {other[0]!r} (output {other[1]!r}) already binds; "
                                    "a pipeline output has one source", *at, "outputs",
                                    str(o), step=name)
                self.bound[parts[2]] = (name, str(o))
        self.check_references(step, raw, at)
        return step

    def check_references(self, step: Step, raw: dict[str, Any], at: tuple[str, ...]) -> None:
        """Every ``${{…}}`` the step runs with names something it has (outside Azure's
        optional ``$[[…]]`` parts), so a typo fails now, with its line, not mid-run."""
        from jupyter_compute.azureml import references

        known = {f"inputs.{k}" for k in step.inputs} | {f"outputs.{o}" for o in step.outputs}
        if step.kind == "command":
            known |= {f"parent.inputs.{k}" for k, v in self.parent_inputs.items()
                      if "literal" in v}
        if step.kind == "sweep":
            known |= {f"search_space.{k}" for k in (step.sweep or {}).get("search_space", {})}
        texts: list[tuple[str, tuple[str, ...]]] = []
        if step.command:
            texts.append((step.command, ("trial", "command") if step.kind == "sweep"
                           else ("command",)))
        texts += [(a, ("arguments",)) for a in step.arguments]
        texts += [(v, ("parameters", k)) for k, v in step.parameters.items()
                  if isinstance(v, str)]
        for text, where in texts:
            for ref in references(_OPTIONAL.sub("", text)):
                if ref in known:
                    continue
                hint = ""
                if ref.startswith("parent.jobs."):
                    hint = " — bind it to an input (inputs: {x: ${{" + ref + "}}}) and use " \
                           "${{inputs.x}}"
                elif ref.startswith("parent.inputs."):
                    hint = " — bind it to an input of the step and use ${{inputs.NAME}}"
                else:
                    close = difflib.get_close_matches(ref, sorted(known), n=1)
                    hint = f" — did you mean {close[0]!r}?" if close else \
                        f" (known: {', '.join(sorted(known)) or 'none'})"
                raise self.fail(f"${{{{{ref}}}}} names nothing the step has{hint}",
                                *at, *where, step=step.name)

    def component(self, name: str, raw: dict[str, Any]) -> dict[str, Any]:
        """A step that names a command component file: the file's ``code``, ``command``,
        ``environment`` and input defaults, under what the step itself sets."""
        at = ("jobs", name, "component")
        ref = raw["component"]
        if not isinstance(ref, str) or ref.startswith("azureml:"):
            raise self.fail(f"component {ref!r} is not a file; registered components live in "
                            "Azure: give the component's YAML file (component: ./train.yml)",
                            *at, step=name)
        path = (self.folder / ref).resolve()
        if not path.is_file():
            raise self.fail(f"no component file {ref!r} (looked for {path})", *at, step=name)
        doc = _Located(path)
        comp = doc.data
        if not isinstance(comp, dict) or comp.get("type", "command") != "command":
            raise self.fail(f"{ref} is not a command component (type: command)", *at,
                            step=name)
        for key in comp:
            if key not in _COMPONENT:
                raise ConfigError(f"step {name!r}: " + unknown("component key", str(key),
                                                               _COMPONENT - _IGNORED),
                                  path=path, line=doc.line(str(key)))
        merged = {k: v for k, v in comp.items() if k in ("command", "environment",
                                                         "environment_variables")}
        if comp.get("code") is not None:  # relative to the component's own file
            merged["code"] = str((path.parent / str(comp["code"])).resolve())
        if isinstance(comp.get("environment"), str) and \
                (path.parent / comp["environment"]).exists():
            merged["environment"] = str(path.parent / comp["environment"])
        merged.update({k: v for k, v in raw.items() if k not in ("component", "inputs",
                                                                 "outputs")})
        inputs = {}
        for key, decl in (comp.get("inputs") or {}).items():
            if isinstance(decl, dict) and ("default" in decl or "path" in decl):
                inputs[key] = {k: v for k, v in decl.items() if k in ("type", "default",
                                                                       "path")}
                if isinstance(decl.get("path"), str) and "${{" not in decl["path"]:
                    inputs[key]["path"] = str((path.parent / decl["path"]).resolve())
        inputs.update(raw.get("inputs") or {})
        merged["inputs"] = inputs
        merged["outputs"] = {**{k: None for k in comp.get("outputs") or {}},
                             **(raw.get("outputs") or {})}
        return merged

    def what_runs(self, step: Step, raw: dict[str, Any], at: tuple[str, ...]) -> None:
        name = step.name
        if step.kind == "notebook":
            notebook = raw.get("notebook")
            if not isinstance(notebook, str) or not notebook.endswith(".ipynb"):
                raise self.fail("a notebook step needs 'notebook: NAME.ipynb' (in its code "
                                "folder)", *at, step=name)
            step.script = notebook
            params = raw.get("parameters") or {}
            if not isinstance(params, dict):
                raise self.fail("parameters must be a mapping", *at, "parameters", step=name)
            step.parameters = dict(params)
            step.kernel = raw.get("kernel")
        elif step.kind == "sweep":
            trial = raw.get("trial")
            if not isinstance(trial, dict) or not (trial.get("command") or trial.get("script")):
                raise self.fail("a sweep step needs 'trial:' with 'command:' (and 'code:')",
                                *at, "trial", step=name)
            for key in ("search_space", "objective"):
                if not isinstance(raw.get(key), dict):
                    raise self.fail(f"a sweep step needs '{key}:'", *at, step=name)
            step.sweep = {k: copy.deepcopy(raw[k]) for k in (
                "trial", "search_space", "sampling_algorithm", "objective", "limits",
                "early_termination") if k in raw}
            step.command = trial.get("command")
        else:
            command, script = raw.get("command"), raw.get("script")
            if command and script:
                raise self.fail("give 'command:' (a shell line) or 'script:' + 'arguments:' "
                                "(an argument list), not both", *at, "script", step=name)
            if command:
                if not isinstance(command, str):
                    raise self.fail("command must be a string", *at, "command", step=name)
                step.command = command
            elif script:
                step.kind = "script"
                step.script = str(script)
                args = raw.get("arguments") or []
                if not isinstance(args, list):
                    raise self.fail("arguments must be a list", *at, "arguments", step=name)
                step.arguments = [str(a) for a in args]
            else:
                raise self.fail("a command step needs 'command:' (or 'script:' + 'arguments:')",
                                *at, step=name)
        if step.kind in ("script", "notebook") and step.code is None:
            raise self.fail(f"a {step.kind} step needs 'code:', the folder that holds "
                            f"{step.script}", *at, step=name)
        if step.script and step.code and not (Path(step.code) / step.script).is_file():
            raise self.fail(f"no {step.script} in its code folder {step.code}", *at,
                            "notebook" if step.kind == "notebook" else "script", step=name)

    def check_bindings(self, steps: dict[str, Step]) -> None:
        for step in steps.values():
            for key, binding in step.inputs.items():
                if "step" not in binding:
                    continue
                source = steps[binding["step"]]
                if binding["output"] not in source.outputs:
                    raise self.fail(
                        f"input {key!r} reads output {binding['output']!r} of step "
                        f"{source.name!r}, which declares "
                        f"{', '.join(source.outputs) or 'no outputs'}",
                        "jobs", step.name, "inputs", key, step=step.name)

    def pipeline_outputs(self, raw: Any, steps: dict[str, Step]) -> dict[str, dict[str, str]]:
        bound = getattr(self, "bound", {})
        if not isinstance(raw, dict):
            raise self.fail("outputs must be a mapping of names", "outputs")
        out = {}
        for name, (step, output) in bound.items():
            if raw and name not in raw:
                raise self.fail(f"step {step!r} binds output {output!r} to pipeline output "
                                f"{name!r}, which the pipeline's 'outputs:' does not declare",
                                "jobs", step, "outputs", output, step=step)
            out[name] = {"step": step, "output": output}
        return out
