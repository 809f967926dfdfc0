"""Compute targets: where runs execute. A kind is a host × a launcher (``base.py``).

Hosts: this machine (``local.py``), an SSH host (``ssh/``). Launchers: a detached
process (``base.py``), a Docker container (``docker/``), a Ray job (``ray/``). Kinds
register in the ``jupyter_compute.targets`` entry-point group (ours are in
``pyproject.toml``). Built-in kinds resolve without scanning entry points, which
costs ~80 ms a process; only an unknown name triggers the scan.
"""

from __future__ import annotations

import difflib
import importlib

from jupyter_compute.exceptions import UsageError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.targets.base import Cluster, Target

ENTRY_POINT_GROUP = "jupyter_compute.targets"

#: Mirrors the entry points in pyproject.toml (a test keeps them in step).
BUILTIN_KINDS = {
    "local": "jupyter_compute.targets.local:LocalTarget",
    "ssh": "jupyter_compute.targets.ssh:SSHTarget",
    "docker": "jupyter_compute.targets.docker:DockerTarget",
    "ray": "jupyter_compute.targets.ray:RayTarget",
    "spark": "jupyter_compute.targets.spark:SparkTarget",
    "slurm": "jupyter_compute.targets.slurm:SlurmTarget",
}


def target_class(kind: str) -> type[Target]:
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


def parse_kind_options(kind: str, argv: list[str]) -> dict[str, Any]:
    """``--min-nodes 2 --keep-container`` → ``{"min_nodes": "2", "keep_container": True}``.

    Each kind declares its options, so a plugin's kind gets CLI and magic flags for
    free; values stay strings here and ``api.attach`` converts and validates them.
    """
    declared = target_class(kind).options
    options: dict[str, Any] = {}
    i = 0
    while i < len(argv):
        flag = argv[i]
        if not flag.startswith("--"):
            raise UsageError(f"unexpected argument {flag!r}; options look like --name VALUE")
        key, _, value = flag[2:].partition("=")
        key = key.replace("-", "_")
        if declared.get(key, (None,))[0] is bool:
            options[key] = value.lower() not in ("0", "false", "no") if value else True
        elif declared.get(key, (None,))[0] is list:  # repeatable: --sbatch-arg A --sbatch-arg B
            if not value:
                if i + 1 >= len(argv):
                    raise UsageError(f"{flag} needs a value")
                value = argv[i + 1]
                i += 1
            options.setdefault(key, []).append(value)
        elif value:
            options[key] = value
        elif i + 1 < len(argv):
            options[key] = argv[i + 1]
            i += 1
        else:
            raise UsageError(f"{flag} needs a value")
        i += 1
    return options


def cluster_of(target: Target) -> Cluster:
    """``target`` as a ``Cluster`` (start, stop, nodes), or a clear error if it is not one."""
    from jupyter_compute.targets.base import Cluster

    if not isinstance(target, Cluster):
        raise UsageError(f"{target.name!r} is a {target.kind} target: there is nothing to "
                         "start or stop (only cluster kinds, such as ray, have)")
    return target


def node_counts(target: Target) -> dict[str, int] | None:
    """Node counts ``{current, min, max, …}`` of a cluster kind; None for any other."""
    from jupyter_compute.targets.base import Cluster

    return target.nodes() if isinstance(target, Cluster) else None
