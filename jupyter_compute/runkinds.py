"""Run kinds (script, notebook, command, sweep): each one's handle and notebook view, in a table.

::

    from jupyter_compute import runkinds

    runkinds.handle(record, ws)     # a Run; a Sweep for a sweep (a Run with trials)
    runkinds.view(run)              # what a notebook shows: a live widget, else a summary
    runkinds.display(run)           # show it in a cell (``Run._ipython_display_``)

Callers ask this table instead of branching on a kind's name. The handle class
supplies the kind's behaviour (``to_dict``, ``summary``, ``describe``, ``cancel`` …);
the handles are named here as ``"module:Class"`` and load on first use.

The live views belong to a face (the widgets), so the core never imports them: a
face registers them with ``register_view`` (``jupyter_compute/__init__.py`` does, for
the widgets). A kind with no live view, or a view that declines (no widgets in a
terminal or under nbconvert), shows its handle's static ``summary()``.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    # Not Run, RunRecord or Workspace: ``runs`` imports this module, and the layering
    # test counts imports under TYPE_CHECKING too.
    from typing import Any

RUN = "jupyter_compute.runs:Run"

#: Each kind's handle class; a kind not listed (from a newer client) reads as a plain run.
HANDLES = {
    "script": RUN,
    "notebook": RUN,
    "command": RUN,  # a command line through bash -c (Azure ML's ``command:``)
    "sweep": "jupyter_compute.sweep.handle:Sweep",
    "pipeline": "jupyter_compute.pipeline.handle:Pipeline",
}

#: Each kind's live view, as registered by a face: "module:function(handle, **options)".
_VIEWS: dict[str, str] = {}
#: How a face displays a run: "module:function(run)" (``widgets.show``).
_DISPLAY: str | None = None


def handle_class(kind: str) -> Any:
    """The handle class of runs of ``kind`` (``Run`` unless the kind has its own)."""
    return _load(HANDLES.get(kind, RUN))


def handle(record: Any, workspace: Any) -> Any:
    """The handle of the run ``record`` describes, of the class its kind gives."""
    return handle_class(record.kind)(record, workspace)


def register_view(kind: str, ref: str) -> None:
    """Show runs of ``kind`` in a notebook with ``ref`` (``"module:function"``), loaded
    when first shown. The function takes the handle and display options and returns
    something to display, or None where it cannot render (the summary is shown)."""
    _VIEWS[kind] = ref


def view_function(kind: str) -> Any:
    """The live view registered for ``kind`` (loaded), or None. Besides the run kinds,
    ``"comparison"`` names the view of runs compared side by side (``comparison.py``)."""
    ref = _VIEWS.get(kind)
    return _load(ref) if ref else None


def view(run: Any, **options: Any) -> Any:
    """What a notebook shows of ``run``: its kind's live view, else its static summary."""
    ref = _VIEWS.get(run.record.kind)
    shown = _load(ref)(run, **options) if ref else None
    return shown if shown is not None else run.summary()


def register_display(ref: str) -> None:
    """Display runs in a notebook with ``ref`` (``"module:function(run)"``): the face's
    ``show``, which keeps each live view's output static once it ends."""
    global _DISPLAY
    _DISPLAY = ref


def display(run: Any) -> None:
    """Show ``run`` in a notebook cell: with the registered display, else its summary."""
    if _DISPLAY:
        _load(_DISPLAY)(run)
        return
    from IPython.display import display as ipython_display

    ipython_display(run.summary())


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
