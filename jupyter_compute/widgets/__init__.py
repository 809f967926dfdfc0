"""What a notebook shows of runs: a live ``RunWidget``, or a static summary.

The widget is fed by a ``Follower`` on a background thread and never blocks the
kernel. Where widgets cannot render (GitHub, nbviewer, nbconvert, a terminal),
the same display falls back to the static text/HTML summary of
``jupyter_compute.summary``. The views here are registered per run kind in
``jupyter_compute.runkinds`` by ``jupyter_compute/__init__.py``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.comparison import Comparison
    from jupyter_compute.runs import Run
    from jupyter_compute.sweep.handle import Sweep


def widgets_available() -> bool:
    """True inside a kernel that can show ipywidgets (not plain IPython, not a script)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return False
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def show(run: Run, tail_lines: int = 500) -> Any:
    """Display ``run`` in the cell as its kind shows (``runkinds.view``); return the live
    widget (its ``display_handle`` set, to swap in the summary at the end) or None."""
    from IPython.display import display

    from jupyter_compute import runkinds

    shown = runkinds.view(run, tail_lines=tail_lines)
    handle = display(shown, display_id=True)
    if not hasattr(shown, "display_handle"):  # a static summary: nothing more to follow
        return None
    shown.display_handle = handle
    return shown


def run_view(run: Run, tail_lines: int = 500) -> Any:
    """A run's live ``RunWidget``, or None where widgets cannot render (its summary shows)."""
    if not widgets_available():
        return None
    from jupyter_compute.widgets.run import RunWidget

    return RunWidget(run, tail_lines=tail_lines)


def sweep_view(sweep: Sweep, tail_lines: int = 500) -> Any:
    """A sweep's live ``SweepWidget``, or None where widgets cannot render."""
    if not widgets_available():
        return None
    from jupyter_compute.widgets.sweep import SweepWidget

    return SweepWidget(sweep)


def compare_view(comparison: Comparison) -> Any:
    """Runs compared side by side, as a live ``CompareWidget`` (curves overlaid, the
    table, the snapshot diff), or None where widgets cannot render (the table shows)."""
    if not widgets_available():
        return None
    from jupyter_compute.widgets.compare import CompareWidget

    return CompareWidget(comparison)
