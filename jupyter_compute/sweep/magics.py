"""``%sweep PATH --config sweep.yml`` and ``%%sweep --config sweep.yml``, in a notebook.

Thin, like the other magics: start the sweep through the same API as the CLI,
display it as any run is shown (``widgets.show``: a live ``SweepWidget``, a static
summary where widgets cannot render),
store the ``Sweep`` in ``-o VAR``, and with ``--wait`` block until it ends — an
interrupt only stops the waiting; the sweep goes on (its controller is detached).
"""

from __future__ import annotations

import os

from jupyter_compute.exceptions import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from jupyter_compute.sweep.handle import Sweep

#: The file a ``%%sweep`` cell becomes inside the sweep's frozen source.
CELL_SCRIPT = "__cell__.py"


def magic_main(shell: Any, args: argparse.Namespace, script_args: list[str],
               cell: str | None = None) -> None:
    """Start the sweep ``args`` describe (``cell``: sweep this cell's code) and show it."""
    from jupyter_compute.environments import from_flags
    from jupyter_compute.sweep.handle import sweep

    path, extra = getattr(args, "path", None), None
    if cell is not None:
        if path:
            raise UsageError("%%sweep sweeps the cell; give a script path to %sweep instead")
        path, extra = CELL_SCRIPT, {CELL_SCRIPT: cell.encode()}
    elif not path:
        raise UsageError("%sweep needs a script: %sweep train.py --config sweep.yml")
    s = sweep(path, config=args.config, target=args.target,
              name=args.name or ("cell-sweep" if cell is not None else None),
              seed=args.seed, arguments=script_args or None, source_dir=os.getcwd(),
              extra_files=extra,
              environment=from_flags(getattr(args, "env", None),
                                     requirements=getattr(args, "requirements", None),
                                     pyproject=getattr(args, "pyproject", None),
                                     conda_file=getattr(args, "conda_file", None),
                                     image=getattr(args, "image", None),
                                     python=getattr(args, "python", None)))
    if getattr(args, "out", None) and shell is not None:
        shell.user_ns[args.out] = s
    from jupyter_compute.widgets import show

    widget = show(s)
    if args.wait:
        wait(s, widget)


def wait(s: Sweep, widget: Any) -> None:
    """Block until the sweep ends; an interrupt detaches, the sweep goes on."""
    try:
        if widget is not None:
            s.wait()
            widget.follower.join(timeout=5)  # its final update belongs to this cell
        else:  # no widgets (a terminal): stream the controller's log here
            for line in s.follow():
                print(line, end="")
    except KeyboardInterrupt:
        print(f"interrupted: stopped waiting; sweep {s.id} goes on "
              f"(Sweep.get({s.id!r}) to follow it, %run_cancel {s.id} to stop it)")
        return
    best = s.best()
    line = f"sweep {s.id} {s.status().value}"
    if best:
        metric = (s.state().get("primary_metric") or {}).get("name")
        line += (f": best trial {best['index']} {best['run_id']} {metric} {best['metric']:.4g} "
                 f"({' '.join(best['arguments'])})")
    print(line)
    for warning in s.warnings:
        print(f"warning: {warning}")
