"""The one API that the CLI, the magics and Python code all call.

::

    from jupyter_compute import submit, attach, Run

    attach("big-vm", "ssh", host="10.0.0.5", user="me", key="~/.ssh/id_ed25519")
    run = submit("train.py", target="local", arguments=["--epochs", "3"])
    run.wait()
"""

from __future__ import annotations

import re
from pathlib import Path

from jupyter_compute import workspace as workspace_mod
from jupyter_compute.attached import attached_targets
from jupyter_compute.attached import get_target as _get_target
from jupyter_compute.attached import read_targets_file as _attached
from jupyter_compute.exceptions import ConflictError, UsageError
from jupyter_compute.runspec import resolve_spec

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.comparison import Comparison
    from jupyter_compute.runs import Run
    from jupyter_compute.targets.base import Target
    from jupyter_compute.workspace import Workspace

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
           requirements: str | None = None, environment: Any = None,
           environment_variables: dict[str, str] | None = None,
           secret_env: list[str] | None = None,
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
    Values of ``environment_variables`` named in ``secret_env``, or whose names look
    secret (``API_TOKEN``, ``DB_PASSWORD``), are never stored and show as ``***``.

    >>> run = submit("train.py", target="local", arguments=["--lr", "0.01"])
    >>> run.wait()
    <RunStatus.COMPLETED: 'Completed'>
    """
    spec = resolve_spec(script, target=target, name=name, arguments=arguments, config=config,
                        source_dir=source_dir, python=python, requirements=requirements,
                        environment=environment,
                        environment_variables=environment_variables, secret_env=secret_env,
                        max_run_duration_seconds=max_run_duration_seconds, kind=kind,
                        parent_id=parent_id, extra_files=extra_files,
                        parameters=parameters, kernel=kernel)
    ws = _ws(workspace, start=spec.source_dir)
    from jupyter_compute.runs import Run

    run = Run.submit(_get_target(spec.target, ws), spec)
    if wait:
        run.wait()
    return run


# -- targets -----------------------------------------------------------------------------


def targets(workspace: Workspace | str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Attached targets by name (``local`` is always there): ``{name: {type, …options}}``."""
    return attached_targets(_ws(workspace))


def get_target(name: str, workspace: Workspace | str | Path | None = None) -> Target:
    """The attached target ``name``, ready to use."""
    return _get_target(name, _ws(workspace))


def attach(name: str, kind: str, *, workspace: Workspace | str | Path | None = None,
           replace: bool = False, **options: Any) -> Target:
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
        if expected is list and isinstance(value, str):  # one value of a repeatable option
            options[key] = value = [value]
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


def environments(target: str | None = None, *, prune: bool = False,
                 days: float | None = None,
                 workspace: Workspace | str | Path | None = None) -> list[dict[str, Any]]:
    """The environments built on ``target`` (default ``local``): key, source, bytes,
    last_used (epoch seconds), runs (how many runs use it now). With ``prune``, remove
    those no running run uses (only those unused for ``days`` days, if given) and
    return them."""
    found = _get_target(target or "local", _ws(workspace))
    if not getattr(found.launcher, "keeps_environments", True):  # docker: its images do
        raise UsageError(f"target {found.name!r} keeps environments as images, not folders: "
                         "see 'docker images jupyter-compute/*'")
    return found.host.environments(prune=prune, days=days)


# -- runs --------------------------------------------------------------------------------


def runs(limit: int | None = 20, status: str | None = None,
         workspace: Workspace | str | Path | None = None) -> list[Run]:
    """Recent runs of the workspace, newest first."""
    from jupyter_compute import runkinds

    ws = _ws(workspace, create=False)
    return [runkinds.handle(r, ws) for r in ws.store.list(limit=limit, status=status)]


def compare(*runs: str | Run, workspace: Workspace | str | Path | None = None) -> Comparison:
    """Runs side by side: arguments, parameters, each metric's last and best value,
    duration, target, environment, git commit, and the snapshot diff (files added,
    removed and changed from the first run to each other one). A sweep's id stands
    for its trials.

    >>> c = compare("20261126-0931-train-7f3a", "20261126-0940-train-9b1c")
    >>> c.to_dict()["snapshot_diff"][0]["changed"]
    ['train.py']
    >>> print(c.diff("train.py"))      # a unified diff of one changed file
    """
    from jupyter_compute.comparison import compare as compare_runs

    if len(runs) == 1 and isinstance(runs[0], (list, tuple)):
        runs = tuple(runs[0])  # compare(["a", "b"]) reads as compare("a", "b")
    return compare_runs(list(runs), _ws(workspace, create=False))
