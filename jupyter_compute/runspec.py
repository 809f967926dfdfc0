"""``RunSpec``: one run, fully resolved — what the target is asked to execute."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunSpec:
    """What to run where. Built by ``api.submit`` from arguments, ``run.yml`` and defaults."""

    script: str                          # posix path relative to source_dir
    source_dir: Path                     # absolute; the folder that is snapshotted
    target: str = "local"
    name: str | None = None
    arguments: list[str] = field(default_factory=list)
    kind: str | None = None              # script | notebook (None: from the file's suffix)
    python: str | None = None            # interpreter on the target; None = target default
    requirements: str | None = None      # requirements file inside the snapshot
    docker_image: str | None = None
    environment_variables: dict[str, str] = field(default_factory=dict)
    max_run_duration_seconds: float | None = None
    node_count: int = 1
    snapshot_max_bytes: int | None = None
    snapshot_max_files: int | None = None
    cancel_grace_seconds: float = 3.0
    parent_id: str | None = None         # the sweep this run belongs to
    extra_files: dict[str, bytes] | None = None  # added to the snapshot (a %%submit cell)
    parameters: dict[str, object] = field(default_factory=dict)  # a notebook's (papermill)
    kernel: str | None = None            # a notebook's kernel; None = its own metadata

    @property
    def display_name(self) -> str:
        return self.name or Path(self.script).stem
