"""The workspace: the ``.jupyter_compute/`` folder that holds targets, runs and blobs.

It is found by walking up from the current folder, as git finds ``.git``; the
``--workspace`` flag or ``JUPYTER_COMPUTE_WORKSPACE`` names one explicitly::

    .jupyter_compute/
      targets.yml   run.yml   sweep.yml     configuration (init writes templates)
      runs.db                               the run store
      blobs/sha256/ab/…                     content-addressed files
      snapshots/<id>.json                   manifests
      runs/<run-id>/                        one folder per run (see protocol.py)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_compute.exceptions import WorkspaceError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from jupyter_compute.store import RunStore

DIRNAME = ".jupyter_compute"
ENV_VAR = "JUPYTER_COMPUTE_WORKSPACE"


@dataclass
class Workspace:
    """Paths of one workspace; ``root`` is the folder that contains ``.jupyter_compute``."""

    root: Path
    _store: RunStore | None = field(default=None, repr=False, compare=False)

    @property
    def dir(self) -> Path:
        return self.root / DIRNAME

    @property
    def targets_file(self) -> Path:
        return self.dir / "targets.yml"

    @property
    def blobs_dir(self) -> Path:
        return self.dir / "blobs"

    @property
    def runs_dir(self) -> Path:
        return self.dir / "runs"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_dir / run_id

    @property
    def store(self) -> RunStore:
        if self._store is None:
            from jupyter_compute.store import RunStore

            self.dir.mkdir(parents=True, exist_ok=True)
            self._store = RunStore(self.dir / "runs.db")
        return self._store


def find(start: str | Path | None = None, explicit: str | Path | None = None,
         create: bool = True) -> Workspace:
    """The workspace for ``start`` (default: the current folder).

    ``explicit`` (or ``$JUPYTER_COMPUTE_WORKSPACE``) wins over the walk up; it may name
    the folder that holds ``.jupyter_compute`` or that folder itself. With nothing
    found, ``create`` makes one in ``start``; otherwise ``WorkspaceError``.
    """
    explicit = explicit or os.environ.get(ENV_VAR) or None
    if explicit:
        path = Path(explicit).expanduser().absolute()
        return Workspace(path.parent if path.name == DIRNAME else path)
    here = Path(start or os.getcwd()).absolute()
    for folder in (here, *here.parents):
        if (folder / DIRNAME).is_dir():
            return Workspace(folder)
    if not create:
        raise WorkspaceError(f"no {DIRNAME}/ in {here} or above; run 'jupyter-compute init' "
                             "there, or pass --workspace")
    return Workspace(here)


def init(root: str | Path) -> tuple[Workspace, list[Path]]:
    """Create ``root/.jupyter_compute`` with commented templates; keep existing files.

    Returns the workspace and the files it wrote.
    """
    from jupyter_compute.config import TEMPLATES

    ws = Workspace(Path(root).absolute())
    ws.dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in TEMPLATES.items():
        path = ws.dir / name
        if not path.exists():
            path.write_text(text, encoding="utf-8")
            written.append(path)
    ws.store  # noqa: B018 - create the database (in WAL) before concurrent writers arrive
    return ws, written
