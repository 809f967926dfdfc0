"""Compute targets: where runs execute. One module per kind, found by entry point.

Kinds register in the ``jupyter_compute.targets`` entry-point group (ours are in
``pyproject.toml``). Built-in kinds resolve without scanning entry points, which
costs ~80 ms a process; only an unknown name triggers the scan.
"""

from __future__ import annotations

import difflib
import importlib

from jupyter_compute.exceptions import UsageError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from jupyter_compute.targets.base import ComputeTarget

ENTRY_POINT_GROUP = "jupyter_compute.targets"

#: Mirrors the entry points in pyproject.toml (a test keeps them in step).
BUILTIN_KINDS = {
    "local": "jupyter_compute.targets.local:LocalTarget",
}


def target_class(kind: str) -> type[ComputeTarget]:
    """The class registered for ``kind``; a clear error naming installed kinds if none."""
    ref = BUILTIN_KINDS.get(kind)
    if ref is None:
        found = _entry_points()
        if kind not in found:
            kinds = sorted(set(found) | set(BUILTIN_KINDS))
            close = difflib.get_close_matches(kind, kinds, n=1)
            hint = f" — did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"unknown target type {kind!r}{hint} (installed: "
                              f"{', '.join(kinds)}); a plugin adds one through the "
                              f"{ENTRY_POINT_GROUP!r} entry-point group")
        return found[kind].load()  # type: ignore[no-any-return]
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)  # type: ignore[no-any-return]


def installed_kinds() -> list[str]:
    """Every kind that can be attached: built in or installed by a plugin."""
    return sorted(set(BUILTIN_KINDS) | set(_entry_points()))


def _entry_points() -> dict:  # type: ignore[type-arg]
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
