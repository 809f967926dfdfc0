"""The targets attached to a workspace: what ``targets.yml`` names, made into objects.

::

    from jupyter_compute.attached import attached_targets, get_target

    attached_targets(ws)          # {"local": {"type": "local"}, "gpu-vm": {"type": "ssh", …}}
    get_target("gpu-vm", ws)      # an SSHTarget, ready to use

The core (``Run``, the sweep controller) resolves a run's target here; ``api``
re-exports these and adds attaching and detaching.
"""

from __future__ import annotations

from jupyter_compute.exceptions import UsageError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.targets.base import Target
    from jupyter_compute.workspace import Workspace

#: The target every workspace has, attached or not.
LOCAL = {"type": "local"}


def attached_targets(ws: Workspace) -> dict[str, dict[str, Any]]:
    """Attached targets by name (``local`` is always there): ``{name: {type, …options}}``."""
    return {"local": dict(LOCAL), **read_targets_file(ws)}


def get_target(name: str, ws: Workspace) -> Target:
    """The attached target ``name``, ready to use; a did-you-mean error if there is none."""
    from jupyter_compute.targets import target_class

    if name == "local" and not ws.targets_file.exists():
        from jupyter_compute.targets.local import LocalTarget

        return LocalTarget("local", {}, ws)  # the common case: no YAML to parse at all
    attached = attached_targets(ws)
    if name not in attached:
        import difflib

        close = difflib.get_close_matches(name, list(attached), n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"no target named {name!r}{hint} attached: {', '.join(attached)}; "
                         "attach one with 'jupyter-compute attach NAME --type KIND'")
    config = dict(attached[name])
    kind = config.pop("type")
    return target_class(kind)(name, config, ws)


def read_targets_file(ws: Workspace) -> dict[str, dict[str, Any]]:
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
