"""``jupyter-compute`` (and ``jupyter compute``): the command line over the same API.

Every command parses, calls ``jupyter_compute.api`` or a ``Run``, and prints.
Errors are one line on stderr; usage and configuration errors exit 2. The names
and the ``--json`` shapes are a contract other tools rely on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from jupyter_compute.exceptions import ComputeError, ConfigError, UsageError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from jupyter_compute.runs import Run

PROG = "jupyter-compute"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not a usage wall
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def duration_argument(text: str) -> float:
    """An argparse type for durations: ``90``, ``90s``, ``5m``, ``1h30m`` → seconds."""
    from jupyter_compute.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")


# -- commands ----------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from jupyter_compute.workspace import init

    ws, written = init(args.dir)
    for path in written:
        _out(f"wrote {path}")
    _out(f"workspace ready: {ws.dir}")
    return 0


def cmd_attach(args: argparse.Namespace) -> int:
    from jupyter_compute import api
    from jupyter_compute.targets import parse_kind_options

    target = api.attach(args.name, args.type, workspace=args.workspace, replace=args.replace,
                        **parse_kind_options(args.type, args.options))
    _out(f"attached {target.name} ({target.kind})")
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    from jupyter_compute import api

    api.detach(args.name, workspace=args.workspace)
    _out(f"detached {args.name}")
    return 0


def cmd_targets(args: argparse.Namespace) -> int:
    from jupyter_compute import api

    found = api.targets(args.workspace)
    if args.json:  # clusters add their node counts {current, min, max}
        _out(json.dumps([{"name": n, **c, **_node_counts(n, args.workspace)}
                         for n, c in found.items()], indent=1))
        return 0
    rows = [(n, c["type"], " ".join(f"{k}={v}" for k, v in c.items() if k != "type"))
            for n, c in found.items()]
    _table(("NAME", "TYPE", "OPTIONS"), rows)
    return 0


def _node_counts(name: str, workspace: str | None) -> dict[str, Any]:
    from jupyter_compute import api
    from jupyter_compute.targets import node_counts

    nodes = node_counts(api.get_target(name, workspace))
    return {"nodes": nodes} if nodes is not None else {}


def cmd_submit(args: argparse.Namespace) -> int:
    from jupyter_compute import api
    from jupyter_compute.config import load_parameters
    from jupyter_compute.distribution import from_flags
    from jupyter_compute.units import format_size

    params = load_parameters(args.parameters, args.raw_parameters, args.parameters_file)
    run = api.submit(args.path, target=args.target, name=args.name, config=args.config,
                     arguments=args.args or None, source_dir=args.source_dir,
                     workspace=args.workspace, environment=environment_from(args),
                     max_run_duration_seconds=args.max_duration,
                     parameters=params or None, kernel=args.kernel, node_count=args.nodes,
                     distribution=from_flags(args.distribution, args.procs_per_node))
    for warning in run.warnings:
        _err(f"warning: {warning}")
    snap = run.record.snapshot
    _err(f"submitted {run.id} to {run.record.target}: {snap['files']} files "
         f"({format_size(snap['bytes'])}), {snap['new_files']} new "
         f"({format_size(snap['new_bytes'])})")
    if args.wait:
        return _stream(run)
    _out(run.id)
    return 0


def _stream(run: Run, rank: int | None = None) -> int:
    """Print the run's log as it grows (one rank's lines: ``rank``); exit code 0 only if
    it Completed."""
    lines: Any = run.follow()
    if rank is not None:
        from jupyter_compute.ranks import rank_lines

        lines = rank_lines(lines, rank)
    try:
        for line in lines:
            sys.stdout.write(line)
            sys.stdout.flush()
    except KeyboardInterrupt:
        _err(f"\nstopped following; {run.id} goes on. Follow it again with "
             f"'{PROG} logs -f {run.id}', stop it with '{PROG} cancel {run.id}'")
        return 130
    status = run.status()
    _out(f"run {run.id} {status.value}")
    if status.value != "Completed":
        if run.record.error:
            _err(f"error: {run.record.error}")
        return 1
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from jupyter_compute import api

    found = api.runs(limit=args.limit, status=args.status, workspace=args.workspace)
    if args.json:
        _out(json.dumps([_shown(r) for r in found], indent=1))
        return 0
    rows = []
    for run in found:
        d = run.to_dict()
        rows.append((d["id"], d["target"], d["status"], d["created"][:19].replace("T", " "),
                     _duration(d["started"], d["ended"])))
    _table(("ID", "TARGET", "STATUS", "CREATED (UTC)", "DURATION"), rows)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    run = _get(args)  # the handle of the run's kind: a sweep shows its trials
    if args.json:
        _out(json.dumps(_shown(run), indent=1))
        return 0
    from jupyter_compute import runinfo

    _out(run.describe() + _details_text(runinfo.details(run)))
    return 0


def _details_text(details: dict[str, Any]) -> str:
    """Params, tags and outputs under ``show``'s record, one line each, as ``--json`` has them."""
    from jupyter_compute.units import format_size

    lines = []
    for title, key in (("params:", "params"), ("tags:", "tags")):
        if details.get(key):
            lines.append(f"{title:<12} " + ", ".join(f"{k}={v}" for k, v in
                                                     details[key].items()))
    if details.get("ranks"):
        lines.append(f"{'ranks:':<12} " + ", ".join(f"{r['rank']}@{r['node']}"
                                                    for r in details["ranks"]))
    if details.get("outputs"):
        lines.append(f"{'outputs:':<12} " + ", ".join(
            f"{o['path']} ({format_size(o['size'])})" for o in details["outputs"]))
    return "".join("\n" + line for line in lines)


def _shown(run: Run) -> dict[str, Any]:
    """The ``--json`` form of a run: its record, then its params, tags and outputs."""
    from jupyter_compute import runinfo

    return {**run.to_dict(), **runinfo.details(run)}


def cmd_logs(args: argparse.Namespace) -> int:
    run = _get(args)
    if args.follow:
        return _stream(run, rank=args.rank)
    text = run.log()
    if args.rank is not None:  # one rank of a multi-node run, without its prefix
        from jupyter_compute.ranks import rank_lines

        text = "".join(rank_lines(text.splitlines(keepends=True), args.rank))
    sys.stdout.write(text)
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    run = _get(args)
    metrics = {name: [{"value": r["value"], "step": r["step"], "time": r["time"]} for r in recs]
               for name, recs in run.metrics().items()}
    if args.json:
        _out(json.dumps(metrics, indent=1))
        return 0
    rows = [(name, len(recs), json.dumps(recs[-1]["value"])[:60]) for name, recs in
            metrics.items()]
    _table(("METRIC", "COUNT", "LAST"), rows)
    return 0


def cmd_outputs(args: argparse.Namespace) -> int:
    """List a run's outputs (path, size), or copy them into ``--download DIR``."""
    from jupyter_compute import runinfo
    from jupyter_compute.units import format_size

    run = _get(args)
    if args.download:
        copied = run.download(args.download)
        _err(f"copied {len(copied)} file{'s' if len(copied) != 1 else ''} of run {run.id} "
             f"into {args.download}")
        return 0
    found = runinfo.outputs(run)
    if args.json:
        _out(json.dumps([{"path": rel, "size": size} for rel, size in found], indent=1))
        return 0
    _table(("PATH", "SIZE"), [(rel, format_size(size)) for rel, size in found])
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    run = _get(args)
    status = run.cancel()
    if status.is_terminal():
        _out(f"run {run.id} already ended {status.value}")
        return 0
    grace = float((run.record.spec or {}).get("cancel_grace_seconds", 3))
    status = run.wait(timeout=grace + 5)
    _out(f"run {run.id} {status.value}")
    return 0 if status.is_terminal() else 1


def cmd_snapshot(args: argparse.Namespace) -> int:
    from jupyter_compute import snapshot
    from jupyter_compute.units import format_size

    if args.list:
        for path in snapshot.list_files(args.dir):
            _out(path)
        return 0
    from jupyter_compute.workspace import find

    ws = find(start=args.dir, explicit=args.workspace)
    snap = snapshot.take_snapshot(args.dir, ws.dir)
    for warning in snap.warnings:
        _err(f"warning: {warning}")
    s = snap.stats
    _out(f"snapshot {snap.id}: {s.files} files ({format_size(s.bytes)}), {s.new_files} new "
         f"({format_size(s.new_bytes)})")
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    from jupyter_compute import api
    from jupyter_compute.targets import cluster_of

    target = cluster_of(api.get_target(args.name, args.workspace))
    target.start()
    _out(f"started {args.name}" + _nodes(target.nodes()))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    from jupyter_compute import api
    from jupyter_compute.targets import cluster_of

    cluster_of(api.get_target(args.name, args.workspace)).stop()
    _out(f"stopped {args.name}")
    return 0


def _nodes(nodes: dict[str, int] | None) -> str:
    if not nodes:
        return ""
    return f": nodes {nodes.get('current')} (min {nodes.get('min')}, max {nodes.get('max')})"


def environment_from(args: argparse.Namespace) -> Any:
    """The Environment the ``--env``/``--requirements``/… flags describe, or None."""
    from jupyter_compute.environments import from_flags

    return from_flags(args.env, requirements=args.requirements, pyproject=args.pyproject,
                      conda_file=args.conda_file, image=args.image, python=args.python)


def add_environment_flags(p: Any) -> None:
    """``--env``, ``--requirements``, ``--pyproject``, ``--conda-file``, ``--image``,
    ``--python``: the run's environment (see environments.py); the same in the magics."""
    p.add_argument("--env", metavar="NAME|FILE",
                   help="'kernel' (this interpreter's packages) or an environment file")
    p.add_argument("--requirements", metavar="FILE", help="a requirements.txt to install")
    p.add_argument("--pyproject", metavar="FILE[EXTRAS]",
                   help="a pyproject.toml's dependencies, e.g. pyproject.toml[test]")
    p.add_argument("--conda-file", metavar="FILE",
                   help="a conda environment.yml, installed from PyPI")
    p.add_argument("--image", metavar="IMAGE", help="docker targets: the image to run in")
    p.add_argument("--python", metavar="PATH|X.Y",
                   help="interpreter on the target: a path, or a version such as 3.11")


def cmd_envs(args: argparse.Namespace) -> int:
    from jupyter_compute import api
    from jupyter_compute.units import format_size

    if args.days is not None and not args.prune:
        raise UsageError("--days goes with --prune")
    found = api.environments(target=args.target, prune=args.prune, days=args.days,
                             workspace=args.workspace)
    if args.json:
        _out(json.dumps(found, indent=1))
        return 0
    if args.prune:
        _err(f"removed {len(found)} environment{'s' if len(found) != 1 else ''}"
             f"{': ' + ', '.join(e['key'] for e in found) if found else ''}")
        return 0
    import time

    rows = [(e["key"], e["source"], format_size(e["bytes"]),
             time.strftime("%Y-%m-%d %H:%M", time.gmtime(e["last_used"])),
             "?" if e["runs"] is None else str(e["runs"])) for e in found]
    _table(("KEY", "SOURCE", "SIZE", "LAST USED (UTC)", "RUNS"), rows)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from jupyter_compute import api

    comparison = api.compare(*args.runs, workspace=args.workspace)
    if args.diff:
        sys.stdout.write(comparison.diff(args.diff))
    elif args.json:
        _out(json.dumps(comparison.to_dict(), indent=1))
    else:
        sys.stdout.write(comparison.text(width=_columns()))
    return 0


def add_compare_parser(add: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    p = add("compare", cmd_compare, "show runs side by side: arguments, params, metrics "
            "(last and best), environment, git, and the files that changed")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="two runs or more (unique id suffixes), or one sweep for its trials")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true")
    shown.add_argument("--diff", metavar="PATH",
                       help="print a unified diff of this file between the runs")


def _columns() -> int:
    """The width for the compare table: 100 columns, fewer in a narrower terminal."""
    import shutil

    return max(60, min(100, shutil.get_terminal_size((100, 24)).columns))


def cmd_job(args: argparse.Namespace) -> int:
    from jupyter_compute.jobfile import parse_overrides, submit_job

    run = submit_job(args.file, overrides=parse_overrides(args.set), name=args.name,
                     workspace=args.workspace)
    for warning in getattr(run, "warnings", ()):
        _err(f"warning: {warning}")
    _err(f"submitted {run.record.kind} job {run.id} to {run.record.target}")
    if not args.wait:
        _out(run.id)
        return 0
    if run.record.kind == "sweep":
        from jupyter_compute.sweep.cli import _follow

        return _follow(run, as_json=False)  # type: ignore[arg-type]
    return _stream(run)


def cmd_sweep(args: argparse.Namespace) -> int:
    from jupyter_compute.sweep import cli_main

    return cli_main(args)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from jupyter_compute.pipeline import cli_main

    return cli_main(args)


#: The folder, under the current one, that ``demo`` copies an installed example into.
DEMO_DIRNAME = "jupyter-compute-demo"


def cmd_demo(args: argparse.Namespace) -> int:
    from jupyter_compute import api, workspace

    folder, packaged = demo_folder()
    ws: Any = args.workspace
    if packaged:
        # Nothing is ever written under the installed package (it may be read-only): the
        # example runs from a copy here, in the workspace every other command finds from
        # here (the nearest .jupyter_compute/ up from this folder, else a new one in it),
        # so a `jupyter compute runs` typed next lists it.
        folder = _demo_copy(folder, Path.cwd() / DEMO_DIRNAME)
        ws = workspace.find(explicit=args.workspace)
        _err(f"demo: the example is in {folder} (edit it and run it again there); "
             f"its runs are in {ws.dir}")
    _err(f"demo: running {folder / 'train.py'} on the local target")
    run = api.submit("train.py", source_dir=folder, name="demo", workspace=ws,
                     arguments=["--epochs", "5"])
    code = _stream(run)
    if code == 0:
        metrics = run.metrics()
        if "accuracy" in metrics:
            _out(f"final accuracy {metrics['accuracy'][-1]['value']:.3f}; outputs: "
                 + ", ".join(p.name for p in run.outputs()))
    return code


def demo_folder() -> tuple[Path, bool]:
    """The example that ``demo`` runs, and whether it lies inside the installed package.

    ``notebooks/`` of a checkout (run in place), or the copy packaged with a wheel.
    """
    here = Path(__file__).resolve().parent
    for folder, packaged in ((here / "examples", True), (here.parent / "notebooks", False)):
        if (folder / "train.py").is_file():
            return folder, packaged
    raise ComputeError("the demo example (train.py) is not installed with this package")


def _demo_copy(example: Path, dest: Path) -> Path:
    """``dest`` holding the example's files; a file already there is kept (maybe edited)."""
    import shutil

    try:
        dest.mkdir(exist_ok=True)
        for path in sorted(example.iterdir()):
            if path.is_file() and not (dest / path.name).exists():
                shutil.copyfile(path, dest / path.name)  # content only: not a read-only mode
    except OSError as exc:
        raise ComputeError(f"cannot copy the demo example to {dest}: {exc.strerror}; "
                           "run the demo from a folder you can write to") from None
    return dest


# -- plumbing ----------------------------------------------------------------------------


def _get(args: argparse.Namespace) -> Run:
    from jupyter_compute.runs import Run

    return Run.get(args.run, args.workspace)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [tuple(map(str, header))] + [tuple("-" if c is None else str(c) for c in r)
                                         for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        _out("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _duration(started: str | None, ended: str | None) -> str:
    if not started:
        return "-"
    from datetime import datetime, timezone

    from jupyter_compute.units import format_duration

    end = datetime.fromisoformat(ended) if ended else datetime.now(timezone.utc)
    return format_duration((end - datetime.fromisoformat(started)).total_seconds())


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--workspace", metavar="PATH",
                        help="workspace folder (default: found walking up; "
                             "$JUPYTER_COMPUTE_WORKSPACE)")
    parser = _Parser(prog=PROG, description="Run scripts on compute targets and follow them.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, func: Command, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("init", cmd_init, "create .jupyter_compute/ with commented templates")
    p.add_argument("dir", nargs="?", default=".", help="folder to put it in (default: here)")

    p = add("attach", cmd_attach, "attach a compute target to the workspace")
    p.add_argument("name")
    p.add_argument("--type", required=True, metavar="KIND", help="local, ssh, docker, ray, …")
    p.add_argument("--replace", action="store_true", help="replace a target of the same name")
    p.epilog = "Other --OPTION VALUE pairs are the kind's options, e.g. --python PATH."

    p = add("detach", cmd_detach, "remove a target from the workspace")
    p.add_argument("name")

    p = add("targets", cmd_targets, "list attached targets")
    p.add_argument("--json", action="store_true")

    p = add("submit", cmd_submit, "snapshot the source folder and run a script on a target")
    p.add_argument("path", nargs="?",
                   help="script, relative to the source directory (default: run.yml's)")
    p.add_argument("--target", "-t", help="target name (default: local)")
    p.add_argument("--name", "-n", help="run name (default: the script's name)")
    p.add_argument("--config", "-c", metavar="RUN_YML", help="run configuration file")
    p.add_argument("--source-dir", metavar="DIR", help="folder to snapshot (default: here)")
    add_environment_flags(p)
    p.add_argument("--max-duration", type=duration_argument, metavar="DURATION",
                   help="TimedOut after this long: 90, 90s, 5m or 1h30m")
    p.add_argument("--wait", "-w", action="store_true",
                   help="stream the logs; exit 0 only if the run Completed")
    add_notebook_flags(p)
    add_distribution_flags(p)
    p.add_argument("args", nargs="*", metavar="-- ARGS", help="arguments for the script")

    for name, func, help in (("start", cmd_start, "start a cluster target (its head node)"),
                             ("stop", cmd_stop, "stop a cluster target")):
        add(name, func, help).add_argument("name", help="target name")

    p = add("sweep", cmd_sweep, "tune hyperparameters: many runs of a script or notebook")
    p.add_argument("path", help="script or notebook, relative to the source directory")
    p.add_argument("--config", "-c", required=True, metavar="SWEEP_YML",
                   help="HyperDrive-style sweep configuration")
    p.add_argument("--target", "-t", help="target name (default: local)")
    p.add_argument("--name", "-n", help="sweep name (default: the script's name)")
    p.add_argument("--source-dir", metavar="DIR", help="folder to snapshot (default: here)")
    p.add_argument("--seed", type=int, help="random seed, for a reproducible sweep")
    p.add_argument("--wait", "-w", action="store_true",
                   help="follow the sweep; exit 0 only if it Completed")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_environment_flags(p)
    p.add_argument("args", nargs="*", metavar="-- ARGS", help="fixed arguments for the script")

    p = add("job", cmd_job, "run an Azure ML v2 job file (type command, sweep or pipeline), "
            "as 'az ml job create --file' does")
    p.add_argument("file", metavar="FILE", help="the job's YAML file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="set a key of the file first, e.g. --set inputs.lr=0.1 (repeatable)")
    p.add_argument("--name", "-n", help="run name (default: the file's display_name)")
    p.add_argument("--wait", "-w", action="store_true",
                   help="follow the job; exit 0 only if it Completed")

    p = add("pipeline", cmd_pipeline, "run a pipeline: Azure ML v2 pipeline YAML, steps on "
            "any target, unchanged steps reused")
    p.add_argument("file", help="the pipeline's YAML file (type: pipeline, jobs: …)")
    p.add_argument("--name", "-n", help="pipeline name (default: the file's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a value of the file, e.g. inputs.epochs=3 (repeatable)")
    p.add_argument("--no-reuse", action="store_true",
                   help="run every step, even those unchanged since they completed")
    p.add_argument("--wait", "-w", action="store_true",
                   help="follow the pipeline; exit 0 only if it Completed")
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    p = add("envs", cmd_envs, "list (or --prune) the environments built on a target")
    p.add_argument("--target", "-t", help="target name (default: local)")
    p.add_argument("--prune", action="store_true",
                   help="remove environments no running run uses (with --days: only those "
                        "unused for that long)")
    p.add_argument("--days", type=float, metavar="N", help="with --prune: unused for N days")
    p.add_argument("--json", action="store_true")

    p = add("runs", cmd_runs, "list recent runs, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--status", help="only runs in this status, e.g. Failed")
    p.add_argument("--json", action="store_true")

    for name, func, help in (("show", cmd_show, "show one run"),
                             ("logs", cmd_logs, "print a run's log"),
                             ("metrics", cmd_metrics, "print a run's metrics"),
                             ("cancel", cmd_cancel, "stop a run")):
        p = add(name, func, help)
        p.add_argument("run", metavar="RUN", help="run id (a unique suffix is enough)")
        if name in ("show", "metrics"):
            p.add_argument("--json", action="store_true")
        if name == "logs":
            p.add_argument("-f", "--follow", action="store_true",
                           help="follow until the run ends")
            p.add_argument("--rank", type=int, metavar="R",
                           help="a multi-node run: only rank R's lines, without '[rank R] '")

    add_outputs_parser(add)
    add_export_parser(add)

    p = add("snapshot", cmd_snapshot, "snapshot a folder, or list what would be sent")
    p.add_argument("dir", nargs="?", default=".")
    p.add_argument("--list", action="store_true", help="print the paths that would be sent")

    add_compare_parser(add)
    add("demo", cmd_demo, "run the example training script on the local target")
    return parser


def add_outputs_parser(add: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    p = add("outputs", cmd_outputs, "list a run's outputs, or --download them")
    p.add_argument("run", metavar="RUN", help="run id (a unique suffix is enough)")
    p.add_argument("--download", metavar="DIR", help="copy the outputs into this folder")
    p.add_argument("--json", action="store_true")


def add_export_parser(add: Callable[[str, Command, str], argparse.ArgumentParser]) -> None:
    p = add("export", cmd_export, "push runs (params, metrics, tags, outputs) to MLflow")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (a sweep brings its trials)")
    p.add_argument("--mlflow", required=True, metavar="URI",
                   help="MLflow tracking URI, e.g. http://127.0.0.1:5000")
    p.add_argument("--experiment", metavar="NAME",
                   help="MLflow experiment (default: jupyter_compute)")


def cmd_export(args: argparse.Namespace) -> int:
    """Export runs to an MLflow tracking server; one line per run exported."""
    from jupyter_compute import mlflow_export
    from jupyter_compute.runs import Run

    runs = [Run.get(run_id, args.workspace) for run_id in args.runs]
    for exported in mlflow_export.export(runs, args.mlflow, experiment=args.experiment):
        _out(f"exported {exported.run_id} to MLflow run {exported.mlflow_run_id}"
             f"{' (updated)' if exported.updated else ''}")
    return 0


def add_notebook_flags(p: argparse.ArgumentParser) -> None:
    """papermill's flags, for ``submit`` of a notebook (the CLI and ``%submit`` share them)."""
    p.add_argument("-p", "--parameters", nargs=2, action="append", metavar=("NAME", "VALUE"),
                   help="notebook parameter, typed as papermill types it (repeatable)")
    p.add_argument("-r", "--raw-parameters", nargs=2, action="append",
                   metavar=("NAME", "VALUE"), help="notebook parameter, kept a string")
    p.add_argument("-f", "--parameters-file", action="append", metavar="YAML",
                   help="notebook parameters from a YAML file")
    p.add_argument("--kernel", "-k", help="kernel for a notebook (default: its own)")


def add_distribution_flags(p: argparse.ArgumentParser) -> None:
    """A multi-node run: ``--nodes N --procs-per-node K --distribution TYPE``."""
    p.add_argument("--nodes", type=int, metavar="N",
                   help="node_count: run on N nodes (local, ray, slurm targets)")
    p.add_argument("--procs-per-node", type=int, metavar="K",
                   help="processes (ranks) per node (default 1)")
    p.add_argument("--distribution", choices=("pytorch", "mpi", "tensorflow"),
                   help="what the ranks are given: pytorch (MASTER_ADDR, RANK…), tensorflow "
                        "(+ TF_CONFIG) or mpi (started under mpirun)")


def _version() -> str:
    from jupyter_compute import __version__

    return f"{PROG} {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" belongs to the script, verbatim (argparse would try to
    # match it against positionals it has already filled).
    passthrough: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, passthrough = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    # attach passes the kind's own options through (each kind declares them).
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "command", None) != "attach":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.options = extra
    if passthrough:
        if not hasattr(args, "args"):
            parser.error(f"'{args.command}' takes no script arguments after '--'")
        args.args = [*args.args, *passthrough]
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except (UsageError, ConfigError) as exc:
        _err(f"{PROG} {args.command}: error: {exc}")
        return 2
    except ComputeError as exc:
        _err(f"{PROG} {args.command}: error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> NoReturn:
    """The ``jupyter-compute`` executable: ``main()``, then a quick exit.

    A command holds nothing that needs tearing down (the store commits each write,
    the agent runs in its own session), and the interpreter's teardown costs ~7 ms
    on every command, so the streams are flushed and the process exits at once.
    """
    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:  # e.g. `jupyter-compute runs | head -1`
        pass
    os._exit(code)


if __name__ == "__main__":
    run()
