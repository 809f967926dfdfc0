"""Run ids, made in one place: ``20261126-0931-train-7f3a`` (UTC minute, name, random).

::

    run_id = new_run_id("train", taken=lambda i: (runs_dir / i).exists())
    run_id = new_run_folder(ws.runs_dir, "train")   # the id, its folder made atomically

Every run (a script, a notebook, a sweep and each of its trials) gets its id here, so
ids sort by time and read the same wherever they come from.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


def new_run_id(name: str, taken: Callable[[str], bool]) -> str:
    """A fresh id for a run called ``name``: the first candidate ``taken`` does not refuse.

    ``taken(candidate)`` says whether the id is in use; it may also claim it (as
    ``new_run_folder`` does with ``os.mkdir``), which makes the choice race-free.

    >>> new_run_id("My model!", taken=lambda i: False)  # doctest: +SKIP
    '20261126-0931-my-model-7f3a'
    """
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "run"
    while True:
        run_id = f"{stamp}-{slug}-{os.urandom(2).hex()}"
        if not taken(run_id):
            return run_id


def new_run_folder(runs_dir: Path, name: str) -> str:
    """A fresh id for a run called ``name``, with its folder under ``runs_dir`` made.

    The folder is made (0700: a run is its owner's business) with ``os.mkdir``, which
    fails if it exists, so two processes never get the same id.
    """
    runs_dir.mkdir(parents=True, exist_ok=True)

    def taken(run_id: str) -> bool:
        try:
            os.mkdir(runs_dir / run_id, 0o700)
        except FileExistsError:
            return True
        return False

    return new_run_id(name, taken)
