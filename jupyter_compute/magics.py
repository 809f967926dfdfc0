"""IPython magics: ``%load_ext jupyter_compute``.

::

    %compute attach gpu-vm --type ssh --host 10.0.0.5 --user me
    %%submit --target local --name mnist -- --epochs 3
    import train; train.main()
    %submit train.py --target gpu-vm -o run
    %job job.yml --set inputs.lr=0.1 --wait
    %runs --limit 10
    %runs --compare 7f3a 9b1c
    %run_show 20261126-0931-mnist-7f3a
    %run_cancel 20261126-0931-mnist-7f3a

Thin by design: parse (``magic_arguments``, or argparse for ``%compute``'s
subcommands), call the same API the CLI calls, display. A ``ComputeError``
shows as one line (``_render_traceback_``); ``JUPYTER_COMPUTE_DEBUG=1`` shows the
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display
from IPython.utils.process import arg_split

from jupyter_compute import api
from jupyter_compute.cli import duration_argument
from jupyter_compute.exceptions import UsageError
from jupyter_compute.runs import Run
from jupyter_compute.widgets import live, show

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

#: The file a ``%%submit`` cell becomes inside the snapshot.
CELL_SCRIPT = "__cell__.py"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _split(line: str) -> tuple[list[str], list[str]]:
    """Tokens of a magic line, and what follows ``--`` (the script's own arguments)."""
    tokens = arg_split(line, posix=True)
    if "--" in tokens:
        cut = tokens.index("--")
        return tokens[:cut], tokens[cut + 1:]
    return tokens, []


@magics_class
class ComputeMagics(Magics):
    """``%compute``, ``%submit``/``%%submit``, ``%runs``, ``%run_show``, ``%run_cancel``."""

    # -- %compute ------------------------------------------------------------------------

    @line_magic
    def compute(self, line: str) -> Any:
        """Manage compute targets: ``%compute attach|detach|list|show``.

        ``%compute attach NAME --type KIND [--option VALUE …]`` takes the kind's options,
        as ``jupyter-compute attach`` does.
        """
        parser = _Parser(prog="%compute", add_help=False)
        sub = parser.add_subparsers(dest="action",
                                    metavar="attach|detach|list|show|start|stop",
                                    parser_class=_Parser)
        p = sub.add_parser("attach", add_help=False)
        p.add_argument("name")
        p.add_argument("--type", required=True)
        p.add_argument("--replace", action="store_true")
        sub.add_parser("detach", add_help=False).add_argument("name")
        sub.add_parser("list", add_help=False)
        sub.add_parser("show", add_help=False).add_argument("name")
        sub.add_parser("start", add_help=False).add_argument("name")
        sub.add_parser("stop", add_help=False).add_argument("name")
        tokens, _ = _split(line)
        args, extra = parser.parse_known_args(tokens)
        if args.action is None:
            raise UsageError("%compute needs an action: attach, detach, list, show, start, stop")
        if extra and args.action != "attach":
            raise UsageError(f"%compute {args.action}: unrecognized arguments: {' '.join(extra)}")
        if args.action == "attach":
            from jupyter_compute.targets import parse_kind_options

            target = api.attach(args.name, args.type, replace=args.replace,
                                **parse_kind_options(args.type, extra))
            print(f"attached {target.name} ({target.kind})")
            return None
        if args.action == "detach":
            api.detach(args.name)
            print(f"detached {args.name}")
            return None
        if args.action == "list":
            return TargetsTable(api.targets())
        from jupyter_compute.targets import cluster_of, node_counts

        target = api.get_target(args.name)
        if args.action == "start":
            cluster_of(target).start()
        elif args.action == "stop":
            cluster_of(target).stop()
            print(f"stopped {target.name}")
            return None
        nodes = node_counts(target)
        if nodes is not None:  # a cluster: its options and node counts, live
            from jupyter_compute.widgets.cluster import show_cluster

            show_cluster(target)
            return None
        display(TargetsTable({args.name: target.describe()}, nodes={args.name: nodes}))
        return None

    # -- %sweep --------------------------------------------------------------------------

    @magic_arguments()
    @argument("path", nargs="?", help="script or notebook to tune (%%sweep: the cell)")
    @argument("--config", "-c", required=True, help="HyperDrive-style sweep.yml")
    @argument("--target", "-t", help="target name (default: local)")
    @argument("--name", "-n", help="sweep name")
    @argument("--seed", type=int, help="random seed, for a reproducible sweep")
    @argument("--env", help="'kernel' (this notebook's packages) or an environment file")
    @argument("--requirements", help="a requirements.txt to install on the target")
    @argument("--pyproject", help="a pyproject.toml's dependencies: pyproject.toml[extras]")
    @argument("--conda-file", help="a conda environment.yml, installed from PyPI")
    @argument("--image", help="docker targets: the image to run in")
    @argument("--python", help="interpreter on the target: a path, or a version (3.11)")
    @argument("--wait", "-w", action="store_true", help="block until the sweep ends")
    @argument("-o", "--out", metavar="VAR", help="store the Sweep in this variable")
    @line_cell_magic
    def sweep(self, line: str, cell: str | None = None) -> Any:
        """Tune hyperparameters: ``%sweep train.py --config sweep.yml [--target T]``,
        or ``%%sweep --config sweep.yml`` to tune the cell's code.

        Arguments after ``--`` are passed to every run; a live SweepWidget follows it.
        """
        tokens, script_args = _split(line)
        args = self.sweep.parser.parse_args(tokens)
        from jupyter_compute.sweep import magic_main

        return magic_main(self.shell, args, script_args, cell=cell)

    # -- %job ---------------------------------------------------------------------------

    @magic_arguments()
    @argument("file", help="an Azure ML v2 job file (type command, sweep or pipeline)")
    @argument("--set", action="append", metavar="KEY=VALUE",
              help="set a key of the file first, e.g. --set inputs.lr=0.1 (repeatable)")
    @argument("--name", "-n", help="run name (default: the file's display_name)")
    @argument("--wait", "-w", action="store_true", help="block until the job ends")
    @argument("-o", "--out", metavar="VAR", help="store the handle in this variable")
    @line_magic
    def job(self, line: str) -> None:
        """Run an Azure ML v2 job file, as ``az ml job create --file`` does:
        ``%job job.yml [--set inputs.lr=0.1] [--wait]``; its live view follows it."""
        args = self.job.parser.parse_args(_split(line)[0])
        from jupyter_compute.jobfile import parse_overrides, submit_job

        run = submit_job(args.file, overrides=parse_overrides(args.set), name=args.name,
                         say=print)
        if args.out and self.shell is not None:
            self.shell.user_ns[args.out] = run
        for warning in getattr(run, "warnings", ()):
            print(f"warning: {warning}")
        widget = show(run)
        if not args.wait:
            return
        if run.record.kind == "sweep":
            from jupyter_compute.sweep.magics import wait

            wait(run, widget)  # type: ignore[arg-type]
        else:
            _wait(run, widget, cancel_on_interrupt=False)

    # -- %pipeline -----------------------------------------------------------------------

    @magic_arguments()
    @argument("file", help="the pipeline's YAML file (type: pipeline, jobs: …)")
    @argument("--name", "-n", help="pipeline name")
    @argument("--set", action="append", metavar="KEY=VALUE",
              help="override a value of the file, e.g. inputs.epochs=3")
    @argument("--no-reuse", action="store_true", help="run every step, even unchanged ones")
    @argument("--wait", "-w", action="store_true", help="block until the pipeline ends")
    @argument("-o", "--out", metavar="VAR", help="store the Pipeline in this variable")
    @line_magic
    def pipeline(self, line: str) -> Any:
        """Run a pipeline: ``%pipeline pipeline.yml [--set inputs.x=1] [--wait]``."""
        args = self.pipeline.parser.parse_args(_split(line)[0])
        from jupyter_compute.pipeline import magic_main

        return magic_main(self.shell, args)

    # -- %submit / %%submit --------------------------------------------------------------

    @magic_arguments()
    @argument("path", nargs="?", help="the script (%%submit: the cell is the script)")
    @argument("--target", "-t", help="target name (default: local)")
    @argument("--name", "-n", help="run name")
    @argument("--config", "-c", help="run configuration (run.yml)")
    @argument("--wait", "-w", action="store_true", help="block until the run ends")
    @argument("--cancel-on-interrupt", action="store_true",
              help="with --wait, cancel the run on interrupt instead of detaching")
    @argument("--env", help="'kernel' (this notebook's packages) or an environment file")
    @argument("--requirements", help="a requirements.txt to install on the target")
    @argument("--pyproject", help="a pyproject.toml's dependencies: pyproject.toml[extras]")
    @argument("--conda-file", help="a conda environment.yml, installed from PyPI")
    @argument("--image", help="docker targets: the image to run in")
    @argument("--python", help="interpreter on the target: a path, or a version (3.11)")
    @argument("--max-duration", type=duration_argument,
              help="max_run_duration_seconds: 90, 90s, 5m or 1h30m")
    @argument("--lines", type=int, default=500, help="log lines the widget keeps")
    @argument("-o", "--out", metavar="VAR", help="store the Run in this variable")
    @argument("-p", "--parameters", nargs=2, action="append", metavar=("NAME", "VALUE"),
              help="notebook parameter, typed as papermill types it (repeatable)")
    @argument("-r", "--raw-parameters", nargs=2, action="append", metavar=("NAME", "VALUE"),
              help="notebook parameter, kept a string")
    @argument("-f", "--parameters-file", action="append", metavar="YAML",
              help="notebook parameters from a YAML file")
    @argument("--kernel", "-k", help="kernel for a notebook (default: its own)")
    @argument("--nodes", type=int, metavar="N", help="node_count: run on N nodes")
    @argument("--procs-per-node", type=int, metavar="K", help="ranks per node (default 1)")
    @argument("--distribution", choices=("pytorch", "mpi", "tensorflow"),
              help="what the ranks are given (mpi: started under mpirun)")
    @line_cell_magic
    def submit(self, line: str, cell: str | None = None) -> None:
        """Submit a script (``%submit train.py``) or this cell (``%%submit``) as a run.

        Arguments after ``--`` go to the script. The cell runs inside a snapshot of the
        notebook's folder, so it can import the folder's modules.
        """
        tokens, script_args = _split(line)
        args = self.submit.parser.parse_args(tokens)
        extra = None
        path = args.path
        if cell is not None:
            if path:
                raise UsageError("%%submit runs the cell; give a script path to %submit instead")
            path, extra = CELL_SCRIPT, {CELL_SCRIPT: cell.encode()}
        elif not path and not args.config:
            raise UsageError("%submit needs a script: %submit train.py [--target T] [-- ARGS]")
        from jupyter_compute.config import load_parameters
        from jupyter_compute.distribution import from_flags
        from jupyter_compute.environments import from_flags as environment_from_flags

        params = load_parameters(args.parameters, args.raw_parameters, args.parameters_file)
        environment = environment_from_flags(
            args.env, requirements=args.requirements, pyproject=args.pyproject,
            conda_file=args.conda_file, image=args.image, python=args.python)
        starting = _starting_note(args.target)
        try:
            run = api.submit(path, target=args.target, name=args.name or (
                "cell" if cell is not None else None), config=args.config,
                arguments=script_args or None, source_dir=os.getcwd(),
                environment=environment, max_run_duration_seconds=args.max_duration,
                extra_files=extra, parameters=params or None, kernel=args.kernel,
                node_count=args.nodes,
                distribution=from_flags(args.distribution, args.procs_per_node))
        finally:
            if starting is not None:  # the run's own view says the rest
                starting.update({"text/plain": ""}, raw=True)
        if args.out and self.shell is not None:
            self.shell.user_ns[args.out] = run
        for warning in run.warnings:
            print(f"warning: {warning}")
        widget = show(run, tail_lines=args.lines)
        if args.wait:
            _wait(run, widget, cancel_on_interrupt=args.cancel_on_interrupt)

    # -- runs ------------------------------------------------------------------------

    @magic_arguments()
    @argument("--limit", type=int, default=20)
    @argument("--status", help="only runs in this status, e.g. Failed")
    @argument("--compare", nargs="+", metavar="RUN",
              help="show these runs side by side (a sweep: its trials)")
    @argument("--diff", metavar="PATH",
              help="with --compare: a unified diff of this file between the runs")
    @line_magic
    def runs(self, line: str) -> Any:
        """A table of recent runs, newest first: ``%runs [--limit N] [--status S]``;
        ``%runs --compare A B …`` shows runs side by side (metrics overlaid, the files
        that changed), ``--diff PATH`` one changed file's diff."""
        args = self.runs.parser.parse_args(_split(line)[0])
        if args.diff and not args.compare:
            raise UsageError("--diff goes with --compare: %runs --compare A B --diff PATH")
        if args.compare:
            comparison = api.compare(*args.compare)
            if args.diff:
                print(comparison.diff(args.diff), end="")
                return None
            return comparison  # shows the compare widget, else the table
        return RunsTable(api.runs(limit=args.limit, status=args.status))

    @magic_arguments()
    @argument("run_id", help="run id (a unique suffix is enough)")
    @argument("--lines", type=int, default=500, help="log lines the widget keeps")
    @argument("-o", "--out", metavar="VAR", help="store the Run in this variable")
    @line_magic
    def run_show(self, line: str) -> None:
        """Reattach a live widget to a run, from any kernel: ``%run_show RUN_ID``."""
        args = self.run_show.parser.parse_args(_split(line)[0])
        run = Run.get(args.run_id)
        if args.out and self.shell is not None:
            self.shell.user_ns[args.out] = run
        show(run, tail_lines=args.lines)

    @magic_arguments()
    @argument("run_id", help="run id (a unique suffix is enough)")
    @line_magic
    def run_cancel(self, line: str) -> None:
        """Stop a run: ``%run_cancel RUN_ID`` (SIGTERM, then SIGKILL after the grace)."""
        args = self.run_cancel.parser.parse_args(_split(line)[0])
        run = Run.get(args.run_id)
        status = run.cancel()
        if status.is_terminal():
            print(f"run {run.id} already ended {status.value}")
            return
        print(f"run {run.id} {run.wait(timeout=10).value}")


def _wait(run: Run, widget: Any, cancel_on_interrupt: bool) -> None:
    """Block until the run ends; an interrupt detaches (or cancels, if asked)."""
    try:
        if widget is not None:
            run.wait()
            widget.follower.join(timeout=5)  # its final update belongs to this cell
            live.end(widget)  # static in this cell, even if the widget lags behind
        else:  # no widgets (a terminal): stream the log here
            for text in run.follow():
                print(text, end="")
    except KeyboardInterrupt:
        if cancel_on_interrupt:
            run.cancel()
            print(f"interrupted: canceled run {run.id} ({run.wait(timeout=10).value})")
        else:
            print(f"interrupted: stopped waiting; run {run.id} goes on "
                  f"(%run_show {run.id} to follow it, %run_cancel {run.id} to stop it)")
        return
    print(f"run {run.id} {run.status().value}")


class RunsTable:
    """``%runs``: HTML in Jupyter, text elsewhere."""

    COLUMNS = ("id", "name", "target", "status", "created", "duration")

    def __init__(self, runs: list[Run]) -> None:
        from jupyter_compute.summary import Summary

        self.rows = []
        for run in runs:
            run.status()
            r = run.record
            s = Summary(r.id, r.name, r.target, r.status, r.started, r.ended)
            self.rows.append((r.id, r.name, r.target, r.status,
                              r.created[:19].replace("T", " "), s.elapsed(), s))

    def __repr__(self) -> str:
        if not self.rows:
            return "no runs yet"
        cells = [tuple(c.upper() for c in self.COLUMNS)] + [row[:6] for row in self.rows]
        widths = [max(len(str(c[i])) for c in cells) for i in range(6)]
        return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
                         for row in cells)

    def _repr_html_(self) -> str:
        import html

        if not self.rows:
            return "<i>no runs yet</i>"
        head = "".join(f"<th>{c}</th>" for c in self.COLUMNS)
        body = "".join(
            f"<tr><td><code>{html.escape(row[0])}</code></td><td>{html.escape(row[1])}</td>"
            f"<td>{html.escape(row[2])}</td><td>{row[6].badge()}</td><td>{row[4]}</td>"
            f"<td>{row[5]}</td></tr>" for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class TargetsTable:
    """``%compute list`` / ``show``: HTML in Jupyter, text elsewhere.

    A target with every option at its default says what that means (``local``: this
    machine and the interpreter its runs use) rather than showing an empty cell.
    """

    def __init__(self, targets: dict[str, dict[str, Any]],
                 nodes: dict[str, dict[str, int] | None] | None = None) -> None:
        self.targets = targets
        self.nodes = nodes or {}

    def _rows(self) -> list[tuple[str, str, str, str]]:
        """(name, type, options, what the defaults mean when there are no options)."""
        rows = []
        for name, config in self.targets.items():
            options = " ".join(f"{k}={v}" for k, v in config.items() if k not in ("type", "name"))
            n = self.nodes.get(name)
            if n:
                options += f" nodes={n.get('current')}/{n.get('min')}..{n.get('max')}"
            kind = str(config.get("type"))
            options = options.strip()
            rows.append((name, kind, options, "" if options else _defaults_note(kind)))
        return rows

    def __repr__(self) -> str:
        rows = [("NAME", "TYPE", "OPTIONS"), *((a, b, c or d) for a, b, c, d in self._rows())]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                         for r in rows)

    def _repr_html_(self) -> str:
        import html

        def options(text: str, note: str) -> str:
            if text:
                return f"<code>{html.escape(text)}</code>"
            return f"<span style='opacity:0.75'>{html.escape(note)}</span>" if note else ""

        body = "".join(f"<tr><td><b>{html.escape(a)}</b></td><td>{html.escape(b)}</td>"
                       f"<td>{options(c, d)}</td></tr>" for a, b, c, d in self._rows())
        return ("<table><thead><tr><th>name</th><th>type</th><th>options</th></tr></thead>"
                f"<tbody>{body}</tbody></table>")


def _starting_note(target_name: str | None) -> Any:
    """Say "Starting cluster NAME…" at once when the submission must start a cluster
    first (a cold Ray head takes seconds); returns the display to clear, or None."""
    if not target_name:
        return None
    from jupyter_compute.targets import node_counts

    try:
        nodes = node_counts(api.get_target(target_name))
    except Exception:  # noqa: BLE001 - the submission itself reports a bad target
        return None
    if not nodes or nodes.get("running") is not False:
        return None
    text = f"Starting cluster {target_name}… (its head takes a few seconds; the run follows)"
    return display({"text/plain": text,
                    "text/html": f"<div style='color:#2563eb'><i>{text}</i></div>"},
                   raw=True, display_id=True)


def _defaults_note(kind: str) -> str:
    """What a target of ``kind`` with no options runs on, in a few words."""
    if kind == "local":
        # LocalHost runs with the submitting interpreter: this kernel's
        version = ".".join(map(str, sys.version_info[:3]))
        return f"this machine, python {version} ({sys.executable})"
    return "default options"


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext jupyter_compute``: register the magics."""
    ipython.register_magics(ComputeMagics)
