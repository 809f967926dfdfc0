"""How a multi-node run is spread: ``node_count`` nodes × ``distribution``.

Azure ML v2's shape, in ``run.yml``, ``submit(...)`` and the flags alike::

    node_count: 2
    distribution: {type: pytorch, process_count_per_node: 2}   # or processCountPerNode,
                                                               # process_count_per_instance

``type`` is ``pytorch``, ``mpi`` or ``tensorflow``; a bare string is the type with one
process per node. What each rank is given, and how ranks start, is in ``ranks.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from jupyter_compute.exceptions import UsageError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

TYPES = ("pytorch", "mpi", "tensorflow")
#: Every spelling of the processes per node: ours, Azure v2's, and their camelCase.
_PER_NODE_KEYS = ("process_count_per_node", "processCountPerNode",
                  "process_count_per_instance", "processCountPerInstance")


@dataclass(frozen=True)
class Distribution:
    """``type`` (pytorch | mpi | tensorflow) and ``process_count_per_node``."""

    type: str
    process_count_per_node: int = 1

    @classmethod
    def parse(cls, value: Any) -> Distribution | None:
        """From a type name, a mapping (any spelling above) or a ``Distribution``.

        >>> Distribution.parse({"type": "PyTorch", "processCountPerNode": 2})
        Distribution(type='pytorch', process_count_per_node=2)
        """
        if value is None or isinstance(value, Distribution):
            return value
        if isinstance(value, str):
            value = {"type": value}
        if not isinstance(value, dict):
            raise UsageError(f"distribution must be a type ({', '.join(TYPES)}) or a mapping "
                             f"{{type, process_count_per_node}}, got {value!r}")
        unknown = sorted(set(value) - {"type", *_PER_NODE_KEYS})
        if unknown:
            raise UsageError(f"unknown distribution key {unknown[0]!r} (valid: type, "
                             "process_count_per_node)")
        kind = str(value.get("type") or "").lower()
        if kind not in TYPES:
            raise UsageError(f"distribution type must be {', '.join(TYPES)}, got "
                             f"{value.get('type')!r}")
        per_node = next((value[k] for k in _PER_NODE_KEYS if value.get(k) is not None), 1)
        return cls(kind, check_count(per_node, "process_count_per_node"))


def check_count(value: Any, what: str) -> int:
    """``value`` as a whole number of at least 1, else one line saying so."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or \
            not str(value).isdigit() or int(value) < 1:
        raise UsageError(f"{what} must be a whole number of at least 1, got {value!r}")
    return int(value)


def layout(node_count: int, distribution: Distribution | None) -> dict[str, Any] | None:
    """The ranks of a run for the agent's ``spec.json`` (``ranks.py``); None for one
    process on one node.

    >>> layout(2, Distribution("pytorch", 2))
    {'nodes': 2, 'procs_per_node': 2, 'type': 'pytorch'}
    """
    if node_count <= 1 and distribution is None:
        return None
    return {"nodes": node_count,
            "procs_per_node": distribution.process_count_per_node if distribution else 1,
            "type": distribution.type if distribution else None}


def from_flags(kind: str | None, procs_per_node: int | None) -> Distribution | None:
    """``--distribution TYPE --procs-per-node K`` (K alone: pytorch's variables)."""
    if kind is None and procs_per_node is None:
        return None
    return Distribution.parse({"type": kind or "pytorch",
                               "process_count_per_node": procs_per_node or 1})
