"""What a notebook shows of runs: a live ``RunWidget``, or a static summary.

The widget is fed by a ``Follower`` on a background thread and never blocks the
kernel. Where widgets cannot render (GitHub, nbviewer, nbconvert, a terminal),
the same display falls back to the static text/HTML summary of ``summary.py``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jupyter_compute.runs import Run


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


def run_bundle(run: Run) -> dict[str, Any]:
    """The display of a run: its live widget where possible, else the static summary."""
    if run.record.kind == "sweep":
        from jupyter_compute.sweep import Sweep

        return Sweep(run)._repr_mimebundle_()  # type: ignore[no-any-return]
    if widgets_available():
        from jupyter_compute.widgets.run import RunWidget

        return RunWidget(run)._repr_mimebundle_()
    from jupyter_compute.widgets.summary import Summary

    return Summary.of(run).bundle()
