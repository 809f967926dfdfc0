"""Reuse: a step whose every ingredient is unchanged takes a Completed step's outputs.

The key is a sha256 of what decides a step's result: its code snapshot, what it
runs (command, or script and arguments, or notebook and parameters), its
environment, the kind of its target, and its inputs (literal values, and the
digests of their files). An index in the workspace maps each key to the run that
completed with it and the manifests of its outputs::

    .jupyter_compute/pipelines/reuse/<key>.json   {"run_id": …, "outputs": {name: files}}

A rerun looks its steps up there: a hit runs nothing and links those outputs
(their blobs are still in the store); a miss, or a step that failed last time
(never indexed), runs. That is also resume: after a fix, only what changed or
never finished runs again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jupyter_compute import protocol

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def key(ingredients: dict[str, Any]) -> str:
    """The reuse key of a step's ingredients (a JSON-able mapping)."""
    text = json.dumps(ingredients, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def index_dir(workspace_dir: Path) -> Path:
    return Path(workspace_dir) / "pipelines" / "reuse"


def lookup(workspace_dir: Path, step_key: str) -> dict[str, Any] | None:
    """What completed with ``step_key``: ``{"run_id", "outputs", "step", "pipeline"}``."""
    try:
        found = protocol.read_json(str(index_dir(workspace_dir) / f"{step_key}.json"))
    except ValueError:  # a torn or foreign file: not a hit
        return None
    return found if isinstance(found, dict) and found.get("run_id") else None


def remember(workspace_dir: Path, step_key: str, entry: dict[str, Any]) -> None:
    folder = index_dir(workspace_dir)
    folder.mkdir(parents=True, exist_ok=True)
    protocol.write_json_atomic(str(folder / f"{step_key}.json"), entry)
