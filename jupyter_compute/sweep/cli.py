"""``jupyter-compute sweep PATH --config sweep.yml [--target T] [--wait] [--json]``.

Without ``--wait`` it prints the sweep's id and returns (the controller goes on
detached). With ``--wait`` it streams the controller's log — each trial started,
stopped and why, the best so far — then a table of trials (or, with ``--json``,
the ``show --json`` shape of the sweep on stdout and the log on stderr). Warnings,
such as a primary metric that no trial logs, go to stderr. The exit code is 0
only if the sweep Completed.
"""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from jupyter_compute.sweep.handle import Sweep


def cli_main(args: argparse.Namespace) -> int:
    """Run the ``sweep`` command for parsed ``args``; return the exit code."""
    from jupyter_compute.environments import from_flags
    from jupyter_compute.sweep.handle import sweep

    environment = from_flags(args.env, requirements=args.requirements,
                             pyproject=args.pyproject, conda_file=args.conda_file,
                             image=args.image, python=args.python)
    s = sweep(args.path, config=args.config, target=args.target, name=args.name,
              arguments=args.args or None, source_dir=args.source_dir,
              workspace=args.workspace, seed=args.seed, environment=environment)
    st = s.state()
    sys.stderr.write(
        f"started sweep {s.id}: {st['script']} on {st['target']}, {st['sampling']} sampling "
        f"(seed {st['seed']}), {st['policy']}, up to {st['max_total_runs']} trials, "
        f"{st['max_concurrent_runs']} at a time\n")
    if not args.wait:
        sys.stdout.write((json.dumps(s.to_dict(), indent=1) if args.json else s.id) + "\n")
        return 0
    return _follow(s, as_json=args.json)


def _follow(s: Sweep, as_json: bool) -> int:
    log = sys.stderr if as_json else sys.stdout
    try:
        for line in s.follow():
            log.write(line)
            log.flush()
    except KeyboardInterrupt:
        sys.stderr.write(f"\nstopped following; sweep {s.id} goes on. Stop it with "
                         f"'jupyter-compute cancel {s.id}'\n")
        return 130
    status = s.status()
    if as_json:
        sys.stdout.write(json.dumps(s.to_dict(), indent=1) + "\n")
    else:
        sys.stdout.write(s.summary().text() + "\n")
    for warning in s.warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if status.value != "Completed":
        if s.record.error:
            sys.stderr.write(f"error: {s.record.error}\n")
        return 1
    return 0
