"""The one API that the CLI, the magics and Python code all call.

::

    from jupyter_compute import submit, attach, Run

    attach("big-vm", "ssh", host="10.0.0.5", user="me", key="~/.ssh/id_ed25519")
    run = submit("train.py", target="local", arguments=["--epochs", "3"])
    run.wait()
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from jupyter_compute import workspace as workspace_mod
from jupyter_compute.exceptions import ConflictError, UsageError
from jupyter_compute.runspec import RunSpec

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runs import Run
    from jupyter_compute.targets.base import ComputeTarget
    from jupyter_compute.workspace import Workspace

LOCAL = {"type": "local"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def _ws(workspace: Workspace | str | Path | None, start: Path | None = None,
        create: bool = True) -> Workspace:
    if isinstance(workspace, workspace_mod.Workspace):
        return workspace
    return workspace_mod.find(start=start, explicit=workspace, create=create)


def submit(script: str | Path | None = None, *, target: str | None = None,
           name: str | None = None, arguments: list[Any] | tuple[Any, ...] | None = None,
           config: str | Path | None = None, source_dir: str | Path | None = None,
           workspace: Workspace | str | Path | None = None, python: str | None = None,
           requirements: str | None = None,
           environment_variables: dict[str, str] | None = None,
           max_run_duration_seconds: float | None = None, wait: bool = False,
           kind: str | None = None, parent_id: str | None = None,
           extra_files: dict[str, bytes] | None = None,
           parameters: dict[str, Any] | None = None, kernel: str | None = None) -> Run:
    """Snapshot ``source_dir`` and run ``script`` from it on ``target``; return the ``Run``.

    Settings come from, in rising priority: defaults, the run configuration file
    ``config`` (``run.yml``), then these arguments. The script's path is relative to
    the source directory (default: the current folder) and must lie inside it.
    A notebook (``.ipynb``) runs through papermill with ``parameters`` injected after
    its cell tagged ``parameters``, on ``kernel`` (default: the notebook's own).

    >>> run = submit("train.py", target="local", arguments=["--lr", "0.01"])
    >>> run.wait()
    <RunStatus.COMPLETED: 'Completed'>
    """
    spec = resolve_spec(script, target=target, name=name, arguments=arguments, config=config,
                        source_dir=source_dir, python=python, requirements=requirements,
                        environment_variables=environment_variables,
                        max_run_duration_seconds=max_run_duration_seconds, kind=kind,
                        parent_id=parent_id, extra_files=extra_files,
                        parameters=parameters, kernel=kernel)
    ws = _ws(workspace, start=spec.source_dir)
    run = get_target(spec.target, ws).submit(spec)
    if wait:
        run.wait()
    return run


def resolve_spec(script: str | Path | None = None, *, config: str | Path | None = None,
                 source_dir: str | Path | None = None, **given: Any) -> RunSpec:
    """Merge defaults, ``run.yml`` and arguments into a checked ``RunSpec``."""
    from jupyter_compute.config import RunConfig, load_run_config

    cfg = load_run_config(config) if config else RunConfig()
    folder = Path(source_dir or cfg.source_directory or os.getcwd()).expanduser().absolute()
    if not folder.is_dir():
        raise UsageError(f"source directory {folder} does not exist; pass --source-dir with "
                         "an existing folder")
    script = script if script is not None else cfg.script
    if not script:
        raise UsageError("no script to run: name one (submit train.py) or set 'script' in "
                         "run.yml")
    extra = given.get("extra_files") or {}
    rel = str(script) if str(script) in extra else _script_in(folder, Path(script))
    env = dict(cfg.environment_variables)
    env.update(given.pop("environment_variables", None) or {})
    arguments = given.pop("arguments", None)
    spec = RunSpec(
        script=rel, source_dir=folder,
        arguments=[str(a) for a in (cfg.arguments if arguments is None else arguments)],
        environment_variables=env, node_count=cfg.node_count,
        cancel_grace_seconds=float(cfg.cancel_grace_seconds),
        snapshot_max_bytes=_limit(cfg.snapshot_max_mb, "JUPYTER_COMPUTE_SNAPSHOT_MAX_MB",
                                  1024 * 1024),
        snapshot_max_files=_limit(cfg.snapshot_max_files, "JUPYTER_COMPUTE_SNAPSHOT_MAX_FILES",
                                  1),
    )
    for key in ("target", "name", "python", "requirements", "docker_image",
                "max_run_duration_seconds"):
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
    if spec.kind != "notebook" and (spec.parameters or spec.kernel):
        raise UsageError("parameters (-p/-r/-f) and --kernel apply to notebooks (.ipynb) only; "
                         "pass a script's options after '--'")
    return spec


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


# -- targets -----------------------------------------------------------------------------


def targets(workspace: Workspace | str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Attached targets by name (``local`` is always there): ``{name: {type, …options}}``."""
    ws = _ws(workspace)
    return {"local": dict(LOCAL), **_attached(ws)}


def get_target(name: str, workspace: Workspace | str | Path | None = None) -> ComputeTarget:
    """The attached target ``name``, ready to use."""
    from jupyter_compute.targets import target_class

    ws = _ws(workspace)
    if name == "local" and not ws.targets_file.exists():
        from jupyter_compute.targets.local import LocalTarget

        return LocalTarget("local", {}, ws)  # the common case: no YAML to parse at all
    attached = targets(ws)
    if name not in attached:
        import difflib

        close = difflib.get_close_matches(name, list(attached), n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"no target named {name!r}{hint} attached: {', '.join(attached)}; "
                         "attach one with 'jupyter-compute attach NAME --type KIND'")
    config = dict(attached[name])
    kind = config.pop("type")
    return target_class(kind)(name, config, ws)


def attach(name: str, kind: str, *, workspace: Workspace | str | Path | None = None,
           replace: bool = False, **options: Any) -> ComputeTarget:
    """Attach a target to the workspace (written to ``targets.yml``) after checking it.

    >>> attach("lab-vm", "ssh", host="lab.example.org", user="me")
    """
    from jupyter_compute.config import dump_targets, targets_lock, unknown
    from jupyter_compute.targets import target_class

    if not _NAME.match(name):
        raise UsageError(f"invalid target name {name!r}: use letters, digits, '-', '_', '.'")
    cls = target_class(kind)
    options = {k: v for k, v in options.items() if v is not None}
    for key, value in options.items():
        if key not in cls.options:
            raise UsageError(unknown(f"option for {kind} targets", key, cls.options))
        expected = cls.options[key][0]
        if not isinstance(value, expected):
            try:
                options[key] = expected(value)
            except (TypeError, ValueError):
                raise UsageError(f"{key} must be a {expected.__name__}, got {value!r}") from None
        value = options[key]
        # what targets.yml refuses on reading (config.check_numbers) is not written to it
        if (isinstance(value, (int, float)) and not isinstance(value, bool)
                and not 0 <= value < float("inf")):
            raise UsageError(f"{key} must be a number 0 or more, got {value!r}")
    ws = _ws(workspace)
    ws.dir.mkdir(parents=True, exist_ok=True)
    if name in _attached(ws) and not replace:  # before a check that may take seconds
        raise _attached_already(name)
    target = cls(name, options, ws)
    target.check()
    # read, modify and write under the lock: two attaches at once both land
    with targets_lock(ws.targets_file):
        attached = _attached(ws)
        if name in attached and not replace:
            raise _attached_already(name)
        attached[name] = {"type": kind, **options}
        dump_targets(ws.targets_file, attached)
    return target


def _attached_already(name: str) -> ConflictError:
    return ConflictError(f"a target named {name!r} is already attached; detach it first or "
                         "pass --replace")


def detach(name: str, workspace: Workspace | str | Path | None = None) -> None:
    """Remove target ``name`` from ``targets.yml`` (its runs stay in the store)."""
    from jupyter_compute.config import dump_targets, targets_lock

    ws = _ws(workspace)
    with targets_lock(ws.targets_file):
        attached = _attached(ws)
        if name not in attached:
            raise UsageError(f"no target named {name!r} is attached (attached: "
                             f"{', '.join(attached) or 'none'})")
        del attached[name]
        dump_targets(ws.targets_file, attached)


def _attached(ws: Workspace) -> dict[str, dict[str, Any]]:
    """What ``targets.yml`` holds (without the implicit ``local``)."""
    from jupyter_compute.config import load_targets

    return load_targets(ws.targets_file, _kind_options)


def _kind_options(kind: str) -> dict[str, Any]:
    from jupyter_compute.config import ConfigError
    from jupyter_compute.targets import target_class

    try:
        cls = target_class(kind)
    except UsageError as exc:
        raise ConfigError(str(exc)) from None
    return {key: typ for key, (typ, _help) in cls.options.items()}


# -- runs --------------------------------------------------------------------------------


def runs(limit: int | None = 20, status: str | None = None,
         workspace: Workspace | str | Path | None = None) -> list[Run]:
    """Recent runs of the workspace, newest first."""
    from jupyter_compute.runs import Run

    ws = _ws(workspace, create=False)
    return [Run(r, ws) for r in ws.store.list(limit=limit, status=status)]
