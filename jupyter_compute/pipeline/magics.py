"""``%pipeline FILE [--name N] [--set inputs.x=1] [--no-reuse] [--wait] [-o VAR]``.

Thin, like the other magics: start the pipeline through the API the CLI calls,
display it as any run is shown (a live view where widgets render, else its
summary), store the ``Pipeline`` in ``-o VAR``; with ``--wait`` block until it ends
(an interrupt only stops the waiting: the controller is detached).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def magic_main(shell: Any, args: argparse.Namespace) -> Any:
    from jupyter_compute.pipeline.cli import parse_overrides
    from jupyter_compute.pipeline.handle import submit_file

    p = submit_file(args.file, name=args.name, overrides=parse_overrides(args.set),
                    reuse=not args.no_reuse)
    if args.out and shell is not None:
        shell.user_ns[args.out] = p
    from jupyter_compute import runkinds

    if args.wait and runkinds.view_function("pipeline") is None:
        return _wait_static(p)  # no live view: one summary, brought up to date at the end
    from jupyter_compute.widgets import show

    widget = show(p)
    if args.wait:
        try:
            p.wait()
            if widget is not None and getattr(widget, "follower", None) is not None:
                widget.follower.join(timeout=5)
                from jupyter_compute.widgets import live

                live.end(widget)
        except KeyboardInterrupt:
            print(f"interrupted: stopped waiting; pipeline {p.id} goes on "
                  f"(%run_cancel {p.id} to stop it)")
            return None
        print(f"pipeline {p.id} {p.status().value}"
              + (f": {p.record.error}" if p.record.error else ""))
    return None


def _wait_static(p: Any) -> None:
    from IPython.display import display

    shown = display(p.summary(), display_id=True)
    try:
        p.wait()
    except KeyboardInterrupt:
        print(f"interrupted: stopped waiting; pipeline {p.id} goes on "
              f"(%run_cancel {p.id} to stop it)")
        return
    if shown is not None:
        shown.update(p.summary())
    print(f"pipeline {p.id} {p.status().value}"
          + (f": {p.record.error}" if p.record.error else ""))
