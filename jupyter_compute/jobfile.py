"""Azure ML v2 job files, run as ``az ml job create --file`` runs them, on our targets.

::

    jupyter compute job job.yml [--wait] [--set inputs.lr=0.1] [--name N]
    %job job.yml --set inputs.lr=0.1
    from jupyter_compute.jobfile import submit_job
    run = submit_job("job.yml", overrides={"inputs.lr": 0.1}, wait=True)

``type: command`` (the default) is one run of ``command`` through ``bash -c`` in a
snapshot of ``code`` (default: the file's folder), on the target ``compute`` names
(``azureml:NAME`` → the attached target NAME; default ``local``), with
``environment`` (``azureml:`` names through the workspace's ``environments.yml``,
see ``azureml.py``; inline ``{image, conda_file}``), ``environment_variables`` and
``limits.timeout``. ``${{inputs.X}}`` is the input's value, shell-quoted: a literal,
or for ``{type: uri_file|uri_folder, path}`` the local file or folder, shipped with
the snapshot (a URL is passed as it is, ``wasbs://`` as its ``https://`` form).
``${{outputs.Y}}`` is a folder ``outputs/Y`` of the run, made before the command.

``type: sweep`` maps onto the sweep engine (``jupyter_compute.sweep``): ``trial``
(``command``, ``code``, ``environment``), ``search_space`` (``choice``, ``randint``,
``uniform``, ``loguniform``, ``normal``, … with ``values`` / ``upper`` /
``min_value`` / ``max_value`` / ``mu`` / ``sigma`` / ``q``), ``sampling_algorithm``,
``objective``, ``limits`` and ``early_termination`` (``bandit``,
``median_stopping``, ``truncation_selection``); ``${{search_space.X}}`` in the
trial's command is each trial's value.

``type: pipeline`` goes to ``jupyter_compute.pipeline.submit_file``.

Keys that only mean something in Azure (``experiment_name``, ``description``,
``tags``, ``identity``, ``resources``, ``distribution``, …) are accepted and
ignored, so existing files run unchanged. Errors name the file, the line and the
key.
"""

from __future__ import annotations

import re
from pathlib import Path

from jupyter_compute import azureml
from jupyter_compute.exceptions import ComputeError, ConfigError, UsageError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from jupyter_compute.config import _Located
    from jupyter_compute.runs import Run
    from jupyter_compute.sweep.config import SweepConfig
    from jupyter_compute.sweep.policies import Policy
    from jupyter_compute.workspace import Workspace

__all__ = ["TYPES", "parse_overrides", "submit_job"]

TYPES = ("command", "sweep", "pipeline")
_TEXT = (str, int, float)
#: Keys of every job that only Azure acts on: accepted, ignored here.
_AZURE_ONLY = {"$schema": str, "name": str, "display_name": str, "experiment_name": str,
               "description": str, "tags": dict, "properties": dict, "identity": dict,
               "services": dict, "queue_settings": dict, "resources": dict,
               "distribution": dict}
_IO = {"inputs": dict, "outputs": dict}
COMMAND_KEYS = {**_AZURE_ONLY, **_IO, "type": str, "command": str, "code": (str, dict),
                "environment": (str, dict), "environment_variables": dict, "compute": str,
                "limits": dict}
TRIAL_KEYS = {"command": str, "code": (str, dict), "environment": (str, dict),
              "environment_variables": dict, "resources": dict, "distribution": dict}
SWEEP_KEYS = {**_AZURE_ONLY, **_IO, "type": str, "trial": dict, "search_space": dict,
              "sampling_algorithm": (str, dict), "objective": dict, "limits": dict,
              "early_termination": dict, "compute": str}
_NUMBER = (int, float)
SEARCH_KEYS = {"type": str, "values": list, "upper": int, "min_value": _NUMBER,
               "max_value": _NUMBER, "mu": _NUMBER, "sigma": _NUMBER, "q": _NUMBER}
SAMPLING_KEYS = {"type": str, "seed": int, "rule": str}
OBJECTIVE_KEYS = {"goal": str, "primary_metric": str}
SWEEP_LIMIT_KEYS = {"max_total_trials": int, "max_concurrent_trials": int,
                    "timeout": _NUMBER, "trial_timeout": _NUMBER}
POLICY_KEYS = {"type": str, "evaluation_interval": int, "delay_evaluation": int,
               "slack_factor": _NUMBER, "slack_amount": _NUMBER,
               "truncation_percentage": int, "exclude_finished_jobs": bool}
#: Azure's early_termination types, and our policies' names for them.
POLICIES = {"bandit": "BanditPolicy", "median_stopping": "MedianStoppingPolicy",
            "truncation_selection": "TruncationSelectionPolicy"}
#: Azure's default when a sweep sets no max_total_trials.
DEFAULT_MAX_TRIALS = 1000
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
_DATA_TYPES = ("uri_file", "uri_folder", "mltable", "mlflow_model", "custom_model",
               "triton_model")
#: Where inputs from outside the code folder go in the snapshot.
INPUTS_DIR = "_inputs"


def submit_job(path: str | Path, *, overrides: dict[str, Any] | None = None,
               name: str | None = None, wait: bool = False,
               workspace: Workspace | str | Path | None = None,
               say: Callable[[str], None] | None = None) -> Run:
    """Run the Azure ML v2 job file ``path``; return its handle (a ``Run``, a ``Sweep``,
    a pipeline's). ``overrides`` set keys by dotted path first (``{"inputs.lr": 0.1}``,
    as ``az ml job create --set``); ``say`` gets one-line notices (default: stderr).

    >>> run = submit_job("jobs/hello.yml", overrides={"inputs.greeting": "hi"}, wait=True)
    """
    from jupyter_compute.config import _Located
    from jupyter_compute.workspace import Workspace
    from jupyter_compute.workspace import find as find_workspace

    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"no job file {str(path)!r}; give the path of an Azure ML job YAML")
    doc = _Located(path)
    if not isinstance(doc.data, dict):
        raise doc.error("a job file is a mapping with 'type: command', 'sweep' or 'pipeline'")
    kind = doc.data.get("type", "command")
    if kind == "pipeline":
        return _pipeline(path, doc, name=name, overrides=overrides, wait=wait)
    if kind not in TYPES:
        from jupyter_compute.config import unknown

        raise doc.error(unknown("job type", str(kind), TYPES), "type")
    _apply_overrides(doc.data, overrides or {})
    ws = workspace if isinstance(workspace, Workspace) else \
        find_workspace(start=path.parent, explicit=workspace)
    job = _Job(doc, ws, say or azureml._stderr)
    run = job.command_job(name) if kind == "command" else job.sweep_job(name)
    if wait:
        run.wait()
    return run


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["inputs.lr=0.1", "compute=azureml:box"]`` → ``{"inputs.lr": 0.1, …}``; each value
    read as YAML (``0.1`` a number, ``"a b"`` a string), as ``az ml``'s ``--set`` reads it."""
    import yaml

    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {pair!r}: write KEY=VALUE, e.g. --set inputs.lr=0.1")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = text
    return out


def _apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Set each dotted key; a scalar given for a data input (a mapping with ``path``)
    replaces its path."""
    for key, value in overrides.items():
        parts = key.split(".")
        here = data
        for i, part in enumerate(parts[:-1]):
            nxt = here.get(part)
            if nxt is None:
                nxt = here[part] = {}
            if not isinstance(nxt, dict):
                raise UsageError(f"--set {key}: {'.'.join(parts[:i + 1])} is not a mapping")
            here = nxt
        last = parts[-1]
        if isinstance(here.get(last), dict) and not isinstance(value, dict) \
                and "path" in here[last]:
            here[last]["path"] = value
        else:
            here[last] = value


def _pipeline(path: Path, doc: _Located, *, name: str | None,
              overrides: dict[str, Any] | None, wait: bool) -> Run:
    try:
        from jupyter_compute.pipeline import submit_file  # type: ignore[attr-defined]
    except ImportError:
        raise doc.error("type: pipeline jobs need jupyter_compute.pipeline, which this "
                        "installation lacks; run command and sweep jobs, or update",
                        "type") from None
    run: Run = submit_file(path, name=name, overrides=overrides or None)
    if wait:
        run.wait()
    return run


class _Job:
    """One job file being turned into a submission; errors carry its file and lines."""

    def __init__(self, doc: _Located, ws: Workspace, say: Callable[[str], None]) -> None:
        self.doc, self.ws, self.say = doc, ws, say
        self.data: dict[str, Any] = doc.data
        self.folder = doc.path.parent.absolute()
        self.extra_files: dict[str, bytes] = {}
        self.compute: Any = None  # the target ``compute`` names (set by ``target``)

    def error(self, message: str, *keys: str) -> ConfigError:
        return self.doc.error(message, *keys)

    def check(self, mapping: Any, allowed: dict[str, Any], *where: str) -> None:
        from jupyter_compute.config import check_keys

        check_keys(self.doc, mapping, allowed, *where)

    def check_numbers(self, limits: dict[str, Any]) -> None:
        from jupyter_compute.config import check_numbers

        check_numbers(self.doc, limits, "limits", positive=tuple(limits))

    # -- the parts every job has ------------------------------------------------------

    def code(self, raw: Any, *where: str) -> Path:
        """The ``code`` folder (``src`` or Azure's older ``{local_path: src}``), relative to
        the job file; default: the file's folder."""
        if isinstance(raw, dict):
            raw = raw.get("local_path") or raw.get("path")
        if raw is None:
            return self.folder
        if not isinstance(raw, str) or "://" in raw or raw.startswith("azureml:"):
            raise self.error(f"code must be a local folder here, got {raw!r}", *where)
        folder = (self.folder / raw).expanduser()
        if not folder.is_dir():
            raise self.error(f"code folder {raw!r} does not exist (looked in {self.folder})",
                             *where)
        return folder.resolve()

    def target(self, raw: Any) -> str:
        from jupyter_compute.attached import get_target

        name = azureml.compute_name(raw) if raw else "local"
        try:
            self.compute = get_target(name, self.ws)
        except ComputeError as exc:
            raise self.error(str(exc), "compute") from None
        return name

    def environment(self, raw: Any, *where: str) -> Any:
        """The run's environment. An inline one's ``image`` is for targets that run
        images: on one that runs processes it is left out, and one line says so."""
        from jupyter_compute.runspec import RunSpec

        try:
            env = azureml.resolve_environment(raw, self.ws, base_dir=self.folder, say=self.say)
        except ConfigError:
            raise
        except ComputeError as exc:
            raise self.error(str(exc), *where) from None
        if env is not None and env.image and isinstance(raw, dict):
            try:
                self.compute.launcher.validate(RunSpec("-", self.folder, docker_image=env.image))
            except UsageError:
                self.say(f"environment image {env.image}: target {self.compute.name!r} runs "
                         "processes, so its own Python runs the job (attach a docker target "
                         "to use the image)")
                env.image = None
                env = None if env.is_empty() else env
        return env

    def variables(self, raw: Any, *where: str) -> dict[str, str]:
        if raw is None:
            return {}
        out = {}
        for key, value in raw.items():
            if isinstance(value, (dict, list)):
                raise self.error(f"environment variable {key} must be a string, got {value!r}",
                                 *where, str(key))
            out[str(key)] = "" if value is None else str(value)
        return out

    def bindings(self, code: Path) -> tuple[dict[str, str], list[str]]:
        """``${{inputs.X}}`` and ``${{outputs.Y}}`` values, and the output folders."""
        bound: dict[str, str] = {}
        inputs = self.data.get("inputs") or {}
        for key, value in inputs.items():
            name = str(key)
            if not _NAME.match(name):
                raise self.error(f"input name {name!r} must be letters, digits, '_' or '-'",
                                 "inputs", name)
            got = self.input_value(name, value, code)
            if got is not None:
                bound[f"inputs.{name}"] = got
        folders = []
        for key, value in (self.data.get("outputs") or {}).items():
            name = str(key)
            if not _NAME.match(name):
                raise self.error(f"output name {name!r} must be letters, digits, '_' or '-'",
                                 "outputs", name)
            if value is not None and not isinstance(value, dict):
                raise self.error(f"output {name} must be a mapping such as "
                                 "{type: uri_folder}, or empty", "outputs", name)
            kind = (value or {}).get("type", "uri_folder")
            rel = f"outputs/{name}"
            bound[f"outputs.{name}"] = azureml.run_path(rel)
            if kind != "uri_file":
                folders.append(rel)
        return bound, folders

    def input_value(self, name: str, value: Any, code: Path) -> str | None:
        where = ("inputs", name)
        if value is None or isinstance(value, (str, int, float, bool)):
            return None if value is None else str(value)
        if not isinstance(value, dict):
            raise self.error(f"input {name} must be a literal or a mapping with a path, got "
                             f"{value!r}", *where)
        if "path" not in value:
            for literal in ("value", "default"):  # {type: integer, default: 3}
                if literal in value:
                    return None if value[literal] is None else str(value[literal])
            raise self.error(f"input {name} has no path or value", *where)
        kind = value.get("type", "uri_folder")
        if kind not in _DATA_TYPES and kind not in ("string", "integer", "number", "boolean"):
            from jupyter_compute.config import unknown

            raise self.error(unknown("input type", str(kind), _DATA_TYPES), *where, "type")
        path = str(value["path"])
        if path.startswith("azureml:") or path.startswith(("abfss://", "adl://")):
            raise self.error(f"input {name} is {path}, which lives in Azure; give a local path "
                             f"(--set inputs.{name}=FILE) or an https URL", *where, "path")
        if value.get("mode") == "direct" or path.startswith(("http://", "https://",
                                                             "wasbs://", "wasb://")):
            url = _https(path)
            self.say(f"input {name}: {url} is passed to the command as a URL (not downloaded)")
            return url
        if path.startswith("file://"):
            path = path[len("file://"):]
        local = (self.folder / path).expanduser().resolve()
        if not local.exists():
            raise self.error(f"input {name}: {path} does not exist (looked in {self.folder})",
                             *where, "path")
        try:  # inside the code folder: it travels with the snapshot already
            rel = local.relative_to(code).as_posix()
        except ValueError:
            rel = self.ship(name, local)
        return azureml.run_path(f"workdir/{rel}" if rel != "." else "workdir")

    def ship(self, name: str, local: Path) -> str:
        """Add a file or folder from outside the code folder to the snapshot."""
        base = f"{INPUTS_DIR}/{name}/{local.name}"
        if local.is_file():
            self.extra_files[base] = local.read_bytes()
        else:
            for file in sorted(local.rglob("*")):
                if file.is_file():
                    self.extra_files[f"{base}/{file.relative_to(local).as_posix()}"] = \
                        file.read_bytes()
        return base

    def command(self, raw: Any, bindings: dict[str, str], folders: list[str],
                *where: str) -> str:
        if not isinstance(raw, str) or not raw.strip():
            raise self.error("command is required: the command line to run, e.g. "
                             "'python train.py --lr ${{inputs.lr}}'", *where)
        try:
            text = azureml.substitute(raw.strip(), bindings)
        except UsageError as exc:
            raise self.error(str(exc), *where) from None
        if folders:  # Azure makes output folders before the command runs
            text = "mkdir -p " + " ".join(azureml.run_path(f) for f in folders) + "\n" + text
        return text

    def run_name(self, name: str | None) -> str | None:
        return name or self.data.get("display_name") or self.data.get("name")

    # -- command -----------------------------------------------------------------------

    def command_job(self, name: str | None) -> Run:
        from jupyter_compute.attached import get_target
        from jupyter_compute.runs import Run
        from jupyter_compute.runspec import resolve_spec

        data = self.data
        self.check(data, COMMAND_KEYS)
        limits = data.get("limits") or {}
        self.check(limits, {"timeout": _NUMBER}, "limits")
        self.check_numbers(limits)
        code = self.code(data.get("code"), "code")
        target = self.target(data.get("compute"))
        bindings, folders = self.bindings(code)
        command = self.command(data.get("command"), bindings, folders, "command")
        env = self.environment(data.get("environment"), "environment")  # last: it may say
        spec = resolve_spec(command=command, source_dir=code, target=target,
                            name=self.run_name(name), environment=env,
                            environment_variables=self.variables(
                                data.get("environment_variables"), "environment_variables"),
                            max_run_duration_seconds=limits.get("timeout"),
                            extra_files=self.extra_files or None)
        return Run.submit(get_target(spec.target, self.ws), spec)

    # -- sweep -------------------------------------------------------------------------

    def sweep_job(self, name: str | None) -> Run:
        from jupyter_compute.runspec import split_environment
        from jupyter_compute.sweep.handle import sweep

        data = self.data
        self.check(data, SWEEP_KEYS)
        trial = data.get("trial")
        if not isinstance(trial, dict):
            raise self.error("a sweep job needs 'trial:' with the command each trial runs",
                             "trial" if "trial" in data else "type")
        self.check(trial, TRIAL_KEYS, "trial")
        limits = data.get("limits") or {}
        self.check(limits, SWEEP_LIMIT_KEYS, "limits")
        self.check_numbers(limits)
        config = self.sweep_config(limits)
        code = self.code(trial.get("code"), "trial", "code")
        target = self.target(data.get("compute"))
        bindings, folders = self.bindings(code)
        for param in config.parameter_space:  # left for each trial (the controller)
            bindings[f"search_space.{param}"] = azureml.ShellWord(
                f"${{{{search_space.{param}}}}}")
        command = self.command(trial.get("command"), bindings, folders, "trial", "command")
        variables = self.variables(trial.get("environment_variables"), "trial",
                                   "environment_variables")
        secret = split_environment(variables)[1]
        if secret:  # a sweep's spec is written down; secret values never are
            raise self.error(f"a sweep's trials take no secret variables ({', '.join(secret)})"
                             ": set them in the target's own environment", "trial",
                             "environment_variables")
        env = self.environment(trial.get("environment"), "trial", "environment")
        seed = None
        algorithm = data.get("sampling_algorithm")
        if isinstance(algorithm, dict):
            seed = algorithm.get("seed")
        return sweep(None, config, command=command, source_dir=code, target=target,
                     name=self.run_name(name), workspace=self.ws, environment=env,
                     seed=seed, extra_files=self.extra_files or None,
                     environment_variables=variables,
                     trial_timeout=limits.get("trial_timeout"))

    def sweep_config(self, limits: dict[str, Any]) -> SweepConfig:
        from jupyter_compute.sweep.config import SweepConfig

        data = self.data
        space = data.get("search_space")
        if not isinstance(space, dict) or not space:
            raise self.error("a sweep job needs 'search_space:' with a parameter or more",
                             "search_space" if "search_space" in data else "type")
        parameters = {str(n): self.expression(str(n), e) for n, e in space.items()}
        sampling, seed = self.sampling(data.get("sampling_algorithm", "random"))
        objective = data.get("objective")
        if not isinstance(objective, dict):
            raise self.error("a sweep job needs 'objective: {goal, primary_metric}'",
                             "objective" if "objective" in data else "type")
        self.check(objective, OBJECTIVE_KEYS, "objective")
        total = limits.get("max_total_trials")
        if total is None and sampling != "grid":
            total = DEFAULT_MAX_TRIALS
        timeout = limits.get("timeout")
        policy = self.policy(data.get("early_termination"))
        try:
            return SweepConfig(
                parameters, primary_metric_name=objective.get("primary_metric") or "",
                primary_metric_goal=objective.get("goal") or "", sampling=sampling,
                policy=policy,
                max_total_runs=total, max_concurrent_runs=limits.get("max_concurrent_trials"),
                max_duration_minutes=timeout / 60 if timeout else None, seed=seed)
        except ConfigError as exc:
            raise self.error(_bare(exc), *self.sweep_key(exc.key)) from None

    def sweep_key(self, key: str | None) -> tuple[str, ...]:
        """Where in the job file the sweep config's key ``key`` was written."""
        return {"primary_metric_name": ("objective", "primary_metric"),
                "primary_metric_goal": ("objective", "goal"),
                "max_total_runs": ("limits", "max_total_trials"),
                "max_concurrent_runs": ("limits", "max_concurrent_trials"),
                "max_duration_minutes": ("limits", "timeout")}.get(key or "", ("search_space",))

    def expression(self, name: str, raw: Any) -> Any:
        from jupyter_compute.sweep.config import EXPRESSIONS, Expression

        where = ("search_space", name)
        if not isinstance(raw, dict):
            raise self.error(f"search_space.{name} must be a mapping such as "
                             "{type: choice, values: [1, 2]}", *where)
        self.check(raw, SEARCH_KEYS, *where)
        kind = raw.get("type")
        if kind not in EXPRESSIONS:
            from jupyter_compute.config import unknown

            raise self.error(unknown("search space type", str(kind), EXPRESSIONS), *where,
                             "type")
        if kind == "choice":
            args: tuple[Any, ...] = tuple(raw.get("values") or ())
        else:
            names = EXPRESSIONS[kind]
            missing = [n for n in names if n not in raw]
            if missing:
                raise self.error(f"{kind} needs {', '.join(names)}; {', '.join(missing)} "
                                 "missing", *where)
            args = tuple(raw[n] for n in names)
        try:
            return Expression(kind, args)
        except ConfigError as exc:
            raise self.error(_bare(exc), *where) from None

    def sampling(self, raw: Any) -> tuple[str, int | None]:
        where = ("sampling_algorithm",)
        if isinstance(raw, dict):
            self.check(raw, SAMPLING_KEYS, *where)
            if raw.get("rule", "random") != "random":
                self.say(f"sampling rule {raw['rule']} is not supported here; sampling at "
                         "random")
            kind, seed = raw.get("type"), raw.get("seed")
        else:
            kind, seed = raw, None
        kind = str(kind).lower()
        if kind not in ("random", "grid", "bayesian"):
            from jupyter_compute.config import unknown

            raise self.error(unknown("sampling algorithm", kind, ("random", "grid",
                                                                  "bayesian")), *where)
        return kind, seed

    def policy(self, raw: Any) -> Policy | None:
        from jupyter_compute.sweep import policies

        if raw is None:
            return None
        where = ("early_termination",)
        self.check(raw, POLICY_KEYS, *where)
        kind = raw.get("type")
        if kind not in POLICIES:
            from jupyter_compute.config import unknown

            raise self.error(unknown("early_termination type", str(kind), POLICIES), *where,
                             "type")
        cls = getattr(policies, POLICIES[kind])
        from dataclasses import fields

        known = {f.name for f in fields(cls)}
        args = {k: v for k, v in raw.items() if k != "type" and v is not None}
        extra = sorted(set(args) - known)
        if extra:
            raise self.error(f"{kind} takes no {', '.join(extra)} (it takes "
                             f"{', '.join(sorted(known - {'type_name'}))})", *where, extra[0])
        try:
            policy: Policy = cls(**args)
        except ConfigError as exc:
            raise self.error(_bare(exc), *where) from None
        return policy


def _bare(exc: ConfigError) -> str:
    """A ConfigError's message without a ``path:line:`` it may carry."""
    text = str(exc)
    return text.split(": ", 1)[1] if exc.path is not None and ": " in text else text


def _https(url: str) -> str:
    """``wasbs://container@account.blob.core.windows.net/p`` → its ``https://`` form."""
    m = re.match(r"^wasbs?://([^@/]+)@([^/]+)/(.*)$", url)
    return f"https://{m.group(2)}/{m.group(1)}/{m.group(3)}" if m else url
