"""jupyter_compute: run a script or notebook on any compute target, from a notebook cell.

::

    from jupyter_compute import submit, Run

    run = submit("train.py", target="local", arguments=["--lr", "0.01"])
    for line in run.follow():
        print(line, end="")
    Run.get(run.id).metrics()

Attributes load on first use, so ``import jupyter_compute.tracking`` inside a
training script (and the CLI's start-up) pays only for what it touches.
"""

from __future__ import annotations

import importlib

from jupyter_compute import runkinds as _runkinds

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"

__all__ = [
    "ComputeError",
    "Run",
    "RunSpec",
    "RunStatus",
    "attach",
    "compare",
    "detach",
    "get_target",
    "runs",
    "submit",
    "targets",
]

_WHERE = {
    "ComputeError": "jupyter_compute.exceptions",
    "Run": "jupyter_compute.runs",
    "RunSpec": "jupyter_compute.runspec",
    "RunStatus": "jupyter_compute.protocol",
    "attach": "jupyter_compute.api",
    "compare": "jupyter_compute.api",
    "detach": "jupyter_compute.api",
    "get_target": "jupyter_compute.api",
    "runs": "jupyter_compute.api",
    "submit": "jupyter_compute.api",
    "targets": "jupyter_compute.api",
    # for `jupyter labextension develop`; not part of the public API
    "_jupyter_labextension_paths": "jupyter_compute.server",
}


# This package is the public face: it gives the run kinds their notebook views, so the
# core (``Run._ipython_display_``) shows widgets without importing them.
_runkinds.register_view("script", "jupyter_compute.widgets:run_view")
_runkinds.register_view("notebook", "jupyter_compute.widgets:run_view")
_runkinds.register_view("command", "jupyter_compute.widgets:run_view")
_runkinds.register_view("sweep", "jupyter_compute.widgets:sweep_view")
_runkinds.register_view("pipeline", "jupyter_compute.widgets:pipeline_view")
_runkinds.register_view("comparison", "jupyter_compute.widgets:compare_view")
_runkinds.register_display("jupyter_compute.widgets:show")


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_compute``: register the magics."""
    from jupyter_compute.magics import load_ipython_extension as load

    load(ipython)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'jupyter_compute' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
