"""The run-side API: what a training script calls to log metrics and keep outputs.

::

    from jupyter_compute.tracking import get_run

    run = get_run()
    run.log("loss", 0.31, step=10)
    run.log_row("eval", epoch=3, accuracy=0.91)
    run.log_image("curve", fig)            # a matplotlib figure or a PNG path
    run.log_params({"lr": 0.01, "layers": 3})
    run.outputs_dir                          # files written here come back as artifacts

Outside a run (the script started by hand) the same calls print what they would
log and do nothing else, so a script stays runnable anywhere.

This module travels to every target, so it uses the standard library only and
imports nothing heavy: importing it costs well under a millisecond.
"""

from __future__ import annotations

import os
import sys

from jupyter_compute import protocol

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Run", "get_run"]


class Run:
    """The current run, as seen from inside the script."""

    def __init__(self, run_id: str | None, run_dir: str | None) -> None:
        self.id = run_id
        self._dir = run_dir
        self._metrics_fd: int | None = None
        #: A rank of a multi-node run (``ranks.py``) records its rank with each metric.
        self._rank = int(os.environ["RANK"]) if os.environ.get("RANK", "").isdigit() and \
            os.environ.get("WORLD_SIZE", "1").isdigit() and int(os.environ["WORLD_SIZE"]) > 1 \
            else None

    @property
    def offline(self) -> bool:
        """True when the script runs outside any run (started by hand)."""
        return self._dir is None

    @property
    def outputs_dir(self) -> str:
        """Folder whose files come back as the run's artifacts (``./outputs``)."""
        base = os.path.join(self._dir, protocol.OUTPUTS) if self._dir else "outputs"
        os.makedirs(base, exist_ok=True)
        return base

    def log(self, name: str, value: float, step: int | None = None) -> None:
        """Log one scalar, e.g. ``run.log("accuracy", 0.91, step=3)``."""
        self._write(name, value, step, "scalar")

    def log_list(self, name: str, values: list[Any]) -> None:
        """Log a list of values under one name, e.g. ``run.log_list("lr", [0.1, 0.01])``."""
        self._write(name, list(values), None, "list")

    def log_row(self, name: str, step: int | None = None, **columns: Any) -> None:
        """Log one row of a table, e.g. ``run.log_row("eval", epoch=1, acc=0.8)``."""
        self._write(name, columns, step, "row")

    def log_image(self, name: str, image: Any = None, path: str | None = None,
                  step: int | None = None) -> str:
        """Save a PNG into ``outputs/`` and log it; ``image`` is a matplotlib figure,
        PNG bytes, or None with ``path`` naming an existing PNG. Returns the saved path.
        """
        rel = f"{_safe_name(name)}{'' if step is None else f'_{step}'}.png"
        dest = os.path.join(self.outputs_dir, rel)
        if path is not None:
            import shutil

            shutil.copyfile(path, dest)
        elif isinstance(image, (bytes, bytearray)):
            with open(dest, "wb") as f:
                f.write(image)
        elif hasattr(image, "savefig"):
            image.savefig(dest, format="png")
        else:
            raise TypeError("log_image needs a matplotlib figure, PNG bytes or path=")
        self._write(name, f"{protocol.OUTPUTS}/{rel}", step, "image")
        return dest

    def log_param(self, name: str, value: Any) -> None:
        """Record one parameter of the run, e.g. ``run.log_param("lr", 0.01)``; it shows
        with the run's params (``show``), and export sends it to MLflow as a param."""
        self._write(name, value, None, "param")

    def log_params(self, params: dict[str, Any]) -> None:
        """Record several parameters, e.g. ``run.log_params({"lr": 0.01, "layers": 3})``."""
        for name, value in params.items():
            self.log_param(name, value)

    def tag(self, name: str, value: Any = "") -> None:
        """Attach a tag to the run, e.g. ``run.tag("dataset", "mnist-v2")``."""
        self._write(name, value, None, "tag")

    def _write(self, name: str, value: Any, step: int | None, kind: str) -> None:
        line = protocol.metric_record(name, value, step, kind, rank=self._rank)
        if self._dir is None:
            print(f"[jupyter_compute offline] {line.rstrip()}", file=sys.stderr)
            return
        if self._metrics_fd is None:
            path = os.path.join(self._dir, protocol.METRICS)
            self._metrics_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # One write per record with O_APPEND: concurrent writers never interleave a line.
        os.write(self._metrics_fd, line.encode())

    def __repr__(self) -> str:
        return f"<Run {self.id or 'offline'}>"


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "image"


_current: Run | None = None


def get_run() -> Run:
    """The run this script is part of (an offline stand-in outside any run)."""
    global _current
    if _current is None:
        _current = Run(os.environ.get(protocol.ENV_RUN_ID),
                       os.environ.get(protocol.ENV_RUN_DIR))
    return _current
