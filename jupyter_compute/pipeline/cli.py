"""``jupyter-compute pipeline FILE [--name N] [--wait] [--set inputs.x=1] [--no-reuse]``.

Without ``--wait`` it prints the pipeline's id and returns (the controller goes on
detached). With ``--wait`` it streams the controller's log (each step started,
reused, completed or skipped, and why), then a line per step (or, with ``--json``,
the ``show --json`` shape on stdout, the log on stderr). Exit code 0 only if the
pipeline Completed.
"""

from __future__ import annotations

import json
import sys

from jupyter_compute.exceptions import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["inputs.x=1"]`` → ``{"inputs.x": "1"}`` (values are read as YAML later)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: give KEY=VALUE, e.g. --set inputs.epochs=3")
        out[key.strip()] = value
    return out


def cli_main(args: argparse.Namespace) -> int:
    """Run the ``pipeline`` command for parsed ``args``; return the exit code."""
    from jupyter_compute.pipeline.handle import submit_file

    p = submit_file(args.file, name=args.name, overrides=parse_overrides(args.set),
                    reuse=not args.no_reuse, workspace=args.workspace)
    steps = p.steps()
    sys.stderr.write(f"started pipeline {p.id}: {len(steps)} steps ("
                     + ", ".join(f"{s['name']} on {s['target']}" for s in steps) + ")\n")
    if not args.wait:
        sys.stdout.write((json.dumps(p.to_dict(), indent=1) if args.json else p.id) + "\n")
        return 0
    log = sys.stderr if args.json else sys.stdout
    try:
        for line in p.follow():
            log.write(line)
            log.flush()
    except KeyboardInterrupt:
        sys.stderr.write(f"\nstopped following; pipeline {p.id} goes on. Stop it with "
                         f"'jupyter-compute cancel {p.id}'\n")
        return 130
    status = p.status()
    sys.stdout.write((json.dumps(p.to_dict(), indent=1) if args.json
                      else p.summary().text()) + "\n")
    if status.value != "Completed":
        if p.record.error and args.json:
            sys.stderr.write(f"error: {p.record.error}\n")
        return 1
    return 0
