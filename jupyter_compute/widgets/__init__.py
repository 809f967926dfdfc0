"""What a notebook shows of runs: a live ``RunWidget``, ``SweepWidget`` or
``PipelineWidget``, or a static summary.

Each widget is fed by a follower on a background thread and never blocks the
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
    widget, or None where only its static summary shows.

    The live widget's output becomes the run's static summary when the run ends, or
    when the kernel goes away (``live``), so a saved notebook keeps the result. A run
    that had already ended stays live (to explore) until the kernel goes.
    """
    from IPython.display import display

    from jupyter_compute import runkinds
    from jupyter_compute.protocol import RunStatus
    from jupyter_compute.summary import StaticSummary
    from jupyter_compute.widgets import live

    # Read before the view exists: its follower starts with it and updates this very
    # record, so a quick run seen ending by its own view would count as one brought back.
    ended_before = RunStatus(run.record.status).is_terminal()
    shown = runkinds.view(run, tail_lines=tail_lines)
    if isinstance(shown, StaticSummary):  # no widgets here: nothing more to follow
        display(shown)
        return None
    root, run_id = run.workspace.root, run.id

    def static(quick: bool) -> StaticSummary:
        # A handle of its own: the caller may be the follower's or the control thread,
        # and SQLite connections are not shared between threads.
        from jupyter_compute.runs import Run as RunHandle

        # The lines the widget read, once it has read them all (else the log's own).
        followed = getattr(shown, "log_text", None) if getattr(shown, "_done", False) else None
        tail = followed.splitlines() if isinstance(followed, str) else None
        return RunHandle.get(run_id, root).summary(fetch_outputs=not quick, log_tail=tail)

    # A view that draws its own final state (a pipeline's graph) is made static by it.
    final = getattr(shown, "static_summary", None) or static
    shown.display_handle = live.show(shown, final, until_end=not ended_before)
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


def pipeline_view(pipeline: Run, tail_lines: int = 500) -> Any:
    """A pipeline's live ``PipelineWidget`` (its steps' graph), or None where widgets
    cannot render."""
    if not widgets_available():
        return None
    from jupyter_compute.widgets.pipeline import PipelineWidget

    return PipelineWidget(pipeline)


def compare_view(comparison: Comparison) -> bool:
    """Display runs compared side by side as a live ``CompareWidget`` (curves overlaid,
    the table, the snapshot diff) whose output becomes the table when the kernel goes.
    False where widgets cannot render (the caller shows the table)."""
    if not widgets_available():
        return False
    from jupyter_compute.widgets import live
    from jupyter_compute.widgets.compare import CompareWidget

    live.show(CompareWidget(comparison), static=lambda quick: comparison, until_end=False)
    return True
