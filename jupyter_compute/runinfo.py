"""What a run page shows beyond the run's record: its parameters, the files its
snapshot sent, and its outputs, with the one safe way to open an output by path.

::

    from jupyter_compute import runinfo

    run = Run.get("20261126-0931-train-7f3a")
    runinfo.params(run)            # {"alpha": 0.5} (notebook), {"--lr": 0.1} (sweep trial),
                                   # {"--lr": "choice(0.1, 0.5)"} (sweep), and what the
                                   # script logged: run.log_param, mlflow.log_param
    runinfo.snapshot_files(run)    # [("train.py", 1234), …]
    runinfo.outputs(run)           # [("model.json", 57), ("curve.png", 20417)]
    runinfo.output_path(run, "model.json")   # a Path inside outputs/, or OutputPathError

Read-only: nothing here writes to the run or the workspace.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from jupyter_compute import protocol
from jupyter_compute.exceptions import ComputeError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runs import Run


class OutputPathError(ComputeError):
    """A path that names no output of the run, or one outside its ``outputs/``."""

    def __init__(self, message: str, escapes: bool = False) -> None:
        super().__init__(message)
        self.escapes = escapes  # it tried to leave outputs/ (vs. simply not there)


def params(run: Run) -> dict[str, Any]:
    """The run's parameters: a notebook's papermill parameters, the values a sweep
    sampled for a trial (as its controller recorded them), a sweep's parameter space,
    then those the script logged (``run.log_param``, ``mlflow.log_param``; last wins)."""
    spec = run.record.spec or {}
    found: dict[str, Any] = dict(spec.get("parameters") or {})
    if run.record.parent_id:
        found.update(_trial_params(run))
    space = ((spec.get("config") or {}).get("sampling") or {}).get("parameter_space") or []
    for item in space:  # a sweep's: [{"name", "expression", "values"}]
        if isinstance(item, dict) and "name" in item:
            values = ", ".join(repr(v) for v in item.get("values") or [])
            found[item["name"]] = f"{item.get('expression')}({values})"
    logged = protocol.parse_metrics(run.target.read(run.id, protocol.METRICS), kind="param")
    found.update({name: records[-1]["value"] for name, records in logged.items()})
    return found


def _trial_params(run: Run) -> dict[str, Any]:
    from jupyter_compute.sweep.controller import STATE

    state = protocol.read_json(str(run.workspace.run_dir(run.record.parent_id or "") / STATE))
    for trial in (state or {}).get("trials") or []:
        if trial.get("run_id") == run.id:
            return dict(trial.get("params") or {})
    return {}


def details(run: Run) -> dict[str, Any]:
    """What ``show --json`` and ``runs --json`` add to a run's record: its ``params``,
    ``tags`` and ``outputs`` (``[{"path": "model.json", "size": 57}]``, under outputs/)."""
    from jupyter_compute.sweep.handle import KIND as SWEEP

    # A sweep's files are its trials': its own folder is local and has no outputs/.
    found = [] if run.record.kind == SWEEP else outputs(run)
    shown = {"params": params(run), "tags": run.tags(),
             "outputs": [{"path": rel, "size": size} for rel, size in found]}
    placed = ranks(run)
    if placed:
        shown["ranks"] = placed
    return shown


def ranks(run: Run) -> list[dict[str, Any]]:
    """A multi-node run's ranks, where each ran: ``[{"rank", "node", "node_rank",
    "local_rank", "pid"}]`` (``ranks.py``); empty for any other run."""
    import json

    try:
        found = json.loads(run.target.read(run.id, protocol.RANKS) or b"{}")
    except ValueError:
        return []
    return list(found.get("ranks") or []) if isinstance(found, dict) else []


def snapshot_files(run: Run) -> list[tuple[str, int]]:
    """``(path, size)`` of every file the run's snapshot holds, sorted by path; empty
    when the manifest is gone (a workspace copied without its snapshots)."""
    from jupyter_compute.snapshot import SnapshotError, load_manifest

    snap_id = (run.record.snapshot or {}).get("id")
    if not snap_id:
        return []
    try:
        manifest = load_manifest(run.workspace.dir, snap_id)
    except (SnapshotError, ValueError, OSError):
        return []
    return sorted((path, int(entry[1])) for path, entry in manifest.get("files", {}).items())


def outputs(run: Run) -> list[tuple[str, int]]:
    """``(posix path under outputs/, size)`` of each of the run's output files, sorted.

    A symbolic link counts only if it ends at a file inside ``outputs/``: a script
    cannot make the page serve a file from elsewhere on the machine.
    """
    folder = run.target.outputs_dir(run.id)
    if not folder.is_dir():
        return []
    root = folder.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath, name)
            real = path.resolve()
            if real.is_file() and _inside(real, root):
                found.append((path.relative_to(folder).as_posix(), real.stat().st_size))
    return sorted(found)


def output_path(run: Run, rel: str) -> Path:
    """The real path of output ``rel`` (posix, relative to ``outputs/``).

    Raises ``OutputPathError`` for a path that is absolute, has ``..``, or leads (by a
    symbolic link) outside ``outputs/`` (``escapes=True``), and for one that is not there.
    """
    if not rel:
        raise OutputPathError("no output named: give its path relative to outputs/")
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or "\\" in rel or "\x00" in rel or ".." in parts:
        raise OutputPathError(f"{rel!r} is not a path inside the run's outputs/; give it "
                              "relative to outputs/, without '..'", escapes=True)
    folder = run.target.outputs_dir(run.id)
    root = folder.resolve()
    real = folder.joinpath(*parts).resolve()
    if not _inside(real, root):
        raise OutputPathError(f"{rel!r} leads outside the run's outputs/", escapes=True)
    if not real.is_file():
        raise OutputPathError(f"run {run.id} has no output {rel!r}; its outputs are listed "
                              "on its page and by 'jupyter-compute show'")
    return real


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
