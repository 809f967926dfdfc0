"""``RunSpec``: one run, fully resolved — what the target is asked to execute.

Secret environment values (``protocol.is_secret_name``, or named in ``secret_env``)
never travel in ``spec.json`` nor rest in the store: ``split_environment`` keeps them
apart, the spec and every display show ``***``, and ``secret_payload`` is what a
target delivers to the agent in the run folder's 0600 ``secrets`` file::

    spec = RunSpec("train.py", Path("."), environment_variables={"API_TOKEN": "abc"})
    spec                    # RunSpec(..., environment_variables={'API_TOKEN': '***'}, ...)
    masked_environment(spec)  # {'API_TOKEN': '***'}
    secret_payload(spec)      # b'{"API_TOKEN": "abc"}'
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import UsageError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.distribution import Distribution
    from jupyter_compute.environments import Environment


@dataclass
class RunSpec:
    """What to run where. Built by ``resolve_spec`` from arguments, ``run.yml`` and defaults."""

    script: str                          # posix path relative to source_dir; a command's text
    source_dir: Path                     # absolute; the folder that is snapshotted
    target: str = "local"
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    kind: str | None = None              # script | notebook | command (None: from the file)
    environment: Environment | None = None  # the packages it needs (environments.py)
    python: str | None = None            # interpreter on the target; None = target default
    requirements: str | None = None      # the environment's requirements file, if any
    docker_image: str | None = None      # the environment's image, if any
    environment_variables: dict[str, str] = field(default_factory=dict)
    secret_env: list[str] = field(default_factory=list)  # names secret whatever they look like
    max_run_duration_seconds: float | None = None
    node_count: int = 1
    distribution: Distribution | None = None  # how the ranks spread (distribution.py)
    snapshot_max_bytes: int | None = None
    snapshot_max_files: int | None = None
    cancel_grace_seconds: float = 3.0
    parent_id: str | None = None         # the sweep this run belongs to
    extra_files: dict[str, bytes] | None = None  # added to the snapshot (a %%submit cell)
    parameters: dict[str, object] = field(default_factory=dict)  # a notebook's (papermill)
    kernel: str | None = None            # a notebook's kernel; None = its own metadata
    #: A command line run by ``bash -c`` in the snapshot folder, with the run's Python
    #: first on PATH (Azure ML's ``command:``); ``script`` then holds the same text.
    command: str | None = None

    @property
    def ranks(self) -> dict[str, Any] | None:
        """The run's ranks (``distribution.layout``); None for one process on one node."""
        from jupyter_compute.distribution import layout

        return layout(self.node_count, self.distribution)

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        return command_name(self.command) if self.command else Path(self.script).stem

    def __repr__(self) -> str:  # the dataclass repr, with secret values masked
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["environment_variables"] = masked_environment(self)
        return f"RunSpec({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


def command_name(command: str) -> str:
    """A run name for a command line: its first ``.py``/``.ipynb`` file's stem, else its
    first word's.

    >>> command_name("cd src && python train.py --lr ${{inputs.lr}}")
    'train'
    """
    import shlex

    try:
        words = shlex.split(command, comments=True)
    except ValueError:  # unbalanced quotes: bash says so when it runs
        words = command.split()
    for word in words:
        if word.endswith((".py", ".ipynb")):
            return Path(word).stem
    return Path(words[0]).name if words else "command"


def split_environment(env: dict[str, str], secret_env: list[str] | tuple[str, ...] = ()
                      ) -> tuple[dict[str, str], dict[str, str]]:
    """``(plain, secret)``: the variables that may be written down, and those that may not.

    >>> split_environment({"EPOCHS": "3", "API_TOKEN": "abc"})
    ({'EPOCHS': '3'}, {'API_TOKEN': 'abc'})
    """
    named = set(secret_env)
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for name, value in env.items():
        is_secret = name in named or protocol.is_secret_name(name)
        (secret if is_secret else plain)[name] = value
    return plain, secret


def masked_environment(spec: RunSpec) -> dict[str, str]:
    """The spec's variables as they may be stored and shown: secret values are ``***``."""
    plain = split_environment(spec.environment_variables, spec.secret_env)[0]
    return {name: plain.get(name, protocol.SECRET_MASK) for name in spec.environment_variables}


def secret_names(spec: RunSpec) -> list[str]:
    """The names of the spec's secret variables (``spec.json``'s ``secret_env``)."""
    return sorted(split_environment(spec.environment_variables, spec.secret_env)[1])


def secret_payload(spec: RunSpec) -> bytes | None:
    """The run folder's ``secrets`` file (JSON ``{name: value}``), or None with no secrets.

    A target writes it with mode 0600 next to ``spec.json`` before the agent starts;
    the agent reads it, deletes it, and adds the values to the script's environment.
    """
    secret = split_environment(spec.environment_variables, spec.secret_env)[1]
    return json.dumps(secret).encode() if secret else None


def resolve_spec(script: str | Path | None = None, *, config: str | Path | None = None,
                 source_dir: str | Path | None = None, **given: Any) -> RunSpec:
    """Merge defaults, ``run.yml`` and arguments into a checked ``RunSpec``."""
    from jupyter_compute.config import RunConfig, load_run_config

    cfg = load_run_config(config) if config else RunConfig()
    folder = Path(source_dir or cfg.source_directory or os.getcwd()).expanduser().absolute()
    if not folder.is_dir():
        raise UsageError(f"source directory {folder} does not exist; pass --source-dir with "
                         "an existing folder")
    command = given.pop("command", None)
    if command is not None:
        if script is not None:
            raise UsageError("give a script or a command, not both")
        if not isinstance(command, str) or not command.strip():
            raise UsageError("the command is empty: give a command line, e.g. "
                             "command='python train.py --epochs 3'")
        rel, given["kind"] = command, "command"
    else:
        script = script if script is not None else cfg.script
        if not script:
            raise UsageError("no script to run: name one (submit train.py) or set 'script' "
                             "in run.yml")
        extra = given.get("extra_files") or {}
        rel = str(script) if str(script) in extra else _script_in(folder, Path(script))
    env = dict(cfg.environment_variables)
    env.update(given.pop("environment_variables", None) or {})
    secret_env = [*cfg.secret_env, *(given.pop("secret_env", None) or [])]
    arguments = given.pop("arguments", None)
    spec = RunSpec(
        script=rel, source_dir=folder,
        arguments=[str(a) for a in (cfg.arguments if arguments is None else arguments)],
        command=command,
        environment_variables=env, secret_env=secret_env, node_count=cfg.node_count,
        cancel_grace_seconds=float(cfg.cancel_grace_seconds),
        snapshot_max_bytes=_limit(cfg.snapshot_max_mb, "JUPYTER_COMPUTE_SNAPSHOT_MAX_MB",
                                  1024 * 1024),
        snapshot_max_files=_limit(cfg.snapshot_max_files, "JUPYTER_COMPUTE_SNAPSHOT_MAX_FILES",
                                  1),
    )
    packages = _environment(cfg.environment, given)
    if packages is not None:  # the flat fields the targets read stay in step with it
        spec.environment = packages
        spec.python, spec.requirements, spec.docker_image = (
            packages.python_path, packages.requirements, packages.image)
    for key in ("target", "name", "max_run_duration_seconds"):
        value = given.pop(key, None)
        if value is None:
            value = getattr(cfg, key, None)
        if value is not None:
            setattr(spec, key, value)
    for key, value in given.items():
        if value is not None:
            setattr(spec, key, value)
    spec.target = spec.target or "local"
    if spec.kind is None:
        spec.kind = "notebook" if spec.script.endswith(".ipynb") else "script"
    if spec.command is not None and spec.arguments:
        raise UsageError("a command takes no separate arguments: write them into the command "
                         "line (quote them with shlex.quote)")
    _distribute(spec, cfg)
    if spec.kind != "notebook" and (spec.parameters or spec.kernel):
        raise UsageError("parameters (-p/-r/-f) and --kernel apply to notebooks (.ipynb) only; "
                         "pass a script's options after '--'")
    return spec


def _distribute(spec: RunSpec, cfg: Any) -> None:
    """``node_count`` and ``distribution`` from the arguments, else run.yml, checked."""
    from jupyter_compute.distribution import Distribution, check_count

    spec.node_count = check_count(spec.node_count, "node_count")
    spec.distribution = Distribution.parse(spec.distribution) or cfg.distribution
    if spec.ranks and spec.kind == "notebook":
        raise UsageError("node_count and distribution apply to scripts; a notebook runs as "
                         "one process")


def _environment(base: dict[str, Any] | None, given: dict[str, Any]) -> Environment | None:
    """run.yml's environment, then ``environment=``, then the single-source flags."""
    from jupyter_compute.environments import Environment

    env = (Environment.parse(base) or Environment()).merged(
        Environment.parse(given.pop("environment", None)))
    flat = Environment(python=given.pop("python", None),
                       requirements=given.pop("requirements", None),
                       image=given.pop("docker_image", None))
    env = env.merged(flat)
    env.check()
    return None if env.is_empty() else env


def _script_in(folder: Path, script: Path) -> str:
    """``script`` as a posix path relative to ``folder``; it must exist inside it."""
    candidates = [script] if script.is_absolute() else [folder / script, Path.cwd() / script]
    root = folder.resolve()
    for path in candidates:
        if path.is_file():
            try:
                return path.resolve().relative_to(root).as_posix()
            except ValueError:
                raise UsageError(f"{script} is outside the source directory {folder}; the "
                                 "script must lie inside it (see --source-dir)") from None
    raise UsageError(f"no script {str(script)!r} in {folder}; the path is relative to the "
                     "source directory (--source-dir)")


def _limit(value: float | None, env: str, unit: int) -> int | None:
    raw = os.environ.get(env) if value is None else value
    if raw is None:
        return None
    try:
        return int(float(raw) * unit)
    except ValueError:
        raise UsageError(f"{env}={raw!r} is not a number") from None
