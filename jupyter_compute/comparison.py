"""Runs side by side: what differed (arguments, parameters, environment, code) and
how each one did (every metric's last and best value).

::

    from jupyter_compute.comparison import compare

    c = compare(["20261126-0931-train-7f3a", "7f3b"], workspace)  # a sweep: its trials
    c.to_dict()       # the `compare --json` shape
    print(c.text())   # a table that fits 100 columns
    c.diff("train.py")  # unified diff of one changed file, from the blob store

The snapshot diff compares manifests (path → sha256, size, mode): files added,
removed and changed between the first run and each other run. Nothing is
re-read from the source folders, so it shows what the runs really ran.

"Best" is the lowest or the highest value: a sweep's own goal for its primary
metric, else a guess from the name (``loss``, ``error``, ``mse`` … are lowered;
anything else is raised), and the output says which it used.

Read-only: nothing here writes to the runs or the workspace.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from jupyter_compute.exceptions import ComputeError, RunNotFoundError, UsageError
from jupyter_compute.summary import StaticSummary, format_value

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import Any

    from jupyter_compute.runs import Run
    from jupyter_compute.workspace import Workspace

#: Name parts of metrics that are better lower; every other metric is better higher.
LOWER_IS_BETTER = ("loss", "error", "err", "mse", "mae", "rmse", "mape", "msle", "nll",
                   "perplexity", "ppl", "wer", "cer", "cost", "regret", "latency", "time",
                   "seconds", "distance", "divergence", "kl")
WIDTH = 100          # columns the text table fits in
LABEL_WIDTH = 22     # the row labels' column, at most
MIN_COLUMN = 14      # a run's column, at least: more runs than fit wrap into blocks
LISTED_FILES = 20    # per kind (added, removed, changed) in the text and HTML
DIFF_MAX_BYTES = 2 * 1024 * 1024  # larger files are not diffed here
_TD = "padding:1px 8px;line-height:1.5;text-align:left;vertical-align:top"
#: The name the widgets register the live compare view under (``runkinds.register_view``).
VIEW = "comparison"


@dataclass
class MetricGoal:
    """Which way a metric is better, and why we think so."""

    name: str
    lower_is_better: bool
    by: str  # "the sweep's goal" or "its name"

    @property
    def word(self) -> str:
        return "min" if self.lower_is_better else "max"


@dataclass
class RunColumn:
    """One run's side of the comparison."""

    id: str
    name: str
    kind: str
    status: str
    target: str
    arguments: list[str]
    params: dict[str, Any]
    tags: dict[str, Any]
    metrics: dict[str, dict[str, Any]]   # name → {last, last_step, best, best_step, count}
    curves: dict[str, list[tuple[Any, float, float | None]]]  # name → [(step, value, time)]
    started: str | None
    ended: str | None
    environment: dict[str, Any] | None
    git: dict[str, Any]
    snapshot: str | None
    parent_id: str | None = None
    trial: int | None = None

    @property
    def duration_seconds(self) -> float | None:
        if not self.started:
            return None
        end = datetime.fromisoformat(self.ended) if self.ended else datetime.now(timezone.utc)
        return round((end - datetime.fromisoformat(self.started)).total_seconds(), 3)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "kind": self.kind, "status": self.status,
                "target": self.target, "parent_id": self.parent_id, "trial": self.trial,
                "arguments": self.arguments, "params": self.params, "tags": self.tags,
                "metrics": {name: {k: _json_number(v) for k, v in m.items()}
                            for name, m in self.metrics.items()},
                "started": self.started, "ended": self.ended,
                "duration_seconds": self.duration_seconds, "environment": self.environment,
                "git": self.git, "snapshot": self.snapshot}


@dataclass
class SnapshotDiff:
    """What changed in the code from the ``base`` run's snapshot to ``run``'s."""

    base: str
    run: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    missing: str | None = None   # why no diff could be made (a manifest that is gone)

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "run": self.run, "added": self.added,
                "removed": self.removed, "changed": self.changed, "missing": self.missing}

    def counts(self) -> str:
        if self.missing:
            return self.missing
        if not (self.added or self.removed or self.changed):
            return "same files"
        return (f"{len(self.added)} added, {len(self.removed)} removed, "
                f"{len(self.changed)} changed")


class Comparison(StaticSummary):
    """N runs side by side: ``to_dict()`` (JSON), ``text()``, ``html()``, ``diff(path)``.

    In a notebook it shows the compare widget where one can render (a face registers
    it as ``runkinds.register_view(VIEW, …)``), else this table as HTML.
    """

    def __init__(self, runs: list[RunColumn], goals: dict[str, MetricGoal],
                 diffs: list[SnapshotDiff], workspace: Workspace,
                 sweep: str | None = None) -> None:
        self.runs, self.goals, self.diffs = runs, goals, diffs
        self.workspace = workspace
        self.sweep = sweep  # the sweep whose trials these are, when one was given

    # -- data ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The ``compare --json`` shape: runs (in order), metric goals, snapshot diffs."""
        return {"sweep": self.sweep, "runs": [r.to_dict() for r in self.runs],
                "metrics": {name: {"best": g.word, "by": g.by} for name, g in self.goals.items()},
                "snapshot_diff": [d.to_dict() for d in self.diffs]}

    def rows(self) -> list[tuple[str, str, list[str]]]:
        """The side-by-side table: ``(section, label, one cell per run)``."""
        from jupyter_compute.units import format_duration

        runs = self.runs
        rows: list[tuple[str, str, list[str]]] = []

        def add(section: str, label: str, cells: Iterable[Any]) -> None:
            rows.append((section, label, ["-" if c is None or c == "" else str(c)
                                          for c in cells]))

        add("run", "name", (r.name if r.trial is None else f"{r.name} #{r.trial}" for r in runs))
        add("run", "status", (r.status for r in runs))
        add("run", "target", (r.target for r in runs))
        add("run", "duration", (None if r.duration_seconds is None
                                else format_duration(r.duration_seconds) for r in runs))
        add("run", "arguments", (" ".join(r.arguments) for r in runs))
        for name in _union(r.params for r in runs):
            add("params", name, (_cell(r.params[name]) if name in r.params else None
                                 for r in runs))
        for name in _union(r.tags for r in runs):
            add("tags", name, (_cell(r.tags[name]) if name in r.tags else None for r in runs))
        for name, goal in self.goals.items():
            add("metrics", f"{name} last", (_metric(r, name, "last") for r in runs))
            add("metrics", f"{name} best ({goal.word})", (_metric(r, name, "best") for r in runs))
        add("code", "git", (_git(r.git) for r in runs))
        add("code", "snapshot", (r.snapshot[:12] if r.snapshot else None for r in runs))
        add("environment", "environment", (_env_source(r.environment) for r in runs))
        if any(r.environment and r.environment.get("requirements") for r in runs):
            add("environment", "packages", (", ".join((r.environment or {}).get("requirements")
                                                      or []) for r in runs))
        if any(r.environment and r.environment.get("key") for r in runs):
            add("environment", "env key", ((r.environment or {}).get("key", "")[:12]
                                           for r in runs))
        return rows

    def diff(self, path: str) -> str:
        """A unified diff of file ``path`` from the first run to each run where it differs.

        A binary file gives one line saying so. Raises ``UsageError`` when no run's
        snapshot holds ``path`` or it is the same in every run.
        """
        from jupyter_compute.blobstore import BlobStore

        path = path.replace("\\", "/").removeprefix("./")
        manifests = [_files(self.workspace, r.snapshot) for r in self.runs]
        if not any(path in files for files in manifests):
            every = sorted({p for files in manifests for p in files})
            raise UsageError(f"no file {path!r} in these runs' snapshots"
                             f"{_did_you_mean(path, every)}; changed files: "
                             f"{', '.join(self.changed_paths()) or 'none'}")
        store = BlobStore(self.workspace.blobs_dir)
        base, base_files = self.runs[0], manifests[0]
        parts = []
        for run, files in zip(self.runs[1:], manifests[1:]):
            old, new = base_files.get(path), files.get(path)
            if old == new:
                continue
            if old and new and old[0] == new[0]:  # the same bytes: only the mode changed
                parts.append(f"{path}: mode {_mode(old)} in {base.id}, {_mode(new)} in "
                             f"{run.id}\n")
                continue
            parts.append(_unified(store, path, base.id, old, run.id, new))
        if not parts:
            raise UsageError(f"{path} is the same in all {len(self.runs)} runs; changed "
                             f"files: {', '.join(self.changed_paths()) or 'none'}")
        return "".join(parts)

    def changed_paths(self) -> list[str]:
        """Every path added, removed or changed in any of the diffs, sorted."""
        return sorted({p for d in self.diffs for p in (*d.added, *d.removed, *d.changed)})

    # -- text and HTML ---------------------------------------------------------------------

    def text(self, width: int = WIDTH) -> str:
        """The table, in blocks of as many runs as fit ``width`` columns, then the
        snapshot diff and which way each metric's best goes."""
        rows = self.rows()
        label_w = min(LABEL_WIDTH, max(len(label) for _, label, _ in rows) + 2)
        fit = max(1, (width - label_w) // (MIN_COLUMN + 2))
        n = len(self.runs)
        per_block = -(-n // -(-n // fit))  # as many blocks as needed, evenly filled
        blocks = [list(range(i, min(i + per_block, n))) for i in range(0, n, per_block)]
        out: list[str] = []
        for block in blocks:
            col_w = max(MIN_COLUMN, (width - label_w) // len(block) - 2)
            header = "".ljust(label_w) + "  ".join(
                _clip_left(self.runs[i].id, col_w).ljust(col_w) for i in block)
            out += [header.rstrip(), "-" * min(width, len(header.rstrip()))]
            section = None
            for sec, label, cells in rows:
                if sec != section and section is not None:
                    out.append("")
                section = sec
                mark = "*" if len(set(cells)) > 1 else " "
                line = (mark + _clip(label, label_w - 2)).ljust(label_w) + "  ".join(
                    _clip(cells[i], col_w).ljust(col_w) for i in block)
                out.append(line.rstrip())
            out.append("")
        out.append("* differs between the runs")
        if self.goals:
            out.append("best: " + "; ".join(f"{g.word} for {name} (by {g.by})"
                                             for name, g in self.goals.items()))
        out.append("")
        out += self._diff_lines()
        return "\n".join(_clip(line, width) for line in out).rstrip() + "\n"

    def _diff_lines(self) -> list[str]:
        base = self.runs[0]
        snap = (base.snapshot or "-")[:12]
        if not self.changed_paths() and not any(d.missing for d in self.diffs):
            return [f"snapshot diff: the {len(self.runs)} runs ran the same files ({snap})"]
        lines = [f"snapshot diff against {base.id} ({snap}):"]
        for d in self.diffs:
            lines.append(f"  {d.run}: {d.counts()}")
            for sign, paths in (("+", d.added), ("-", d.removed), ("~", d.changed)):
                lines += [f"    {sign} {p}" for p in paths[:LISTED_FILES]]
                if len(paths) > LISTED_FILES:
                    lines.append(f"    {sign} … and {len(paths) - LISTED_FILES} more")
        if self.changed_paths():
            lines.append("(a file's changes: jupyter-compute compare … --diff PATH)")
        return lines

    def html(self) -> str:
        return (f"<div class='jupyter-compute-compare'>{self.table_html()}{self.diff_html()}"
                "</div>")

    def table_html(self) -> str:
        """The side-by-side table as HTML; rows whose values differ are highlighted."""
        import html

        e = html.escape
        head = "".join(f"<th><code title='{e(r.id)}'>{e(_clip_left(r.id, 28))}</code></th>"
                       for r in self.runs)
        body = []
        section = None
        for sec, label, cells in self.rows():
            if sec != section:
                section = sec
                body.append(f"<tr><th colspan='{len(cells) + 1}' style='{_TD};"
                            f"text-align:left;opacity:0.7;padding-top:6px'>{e(sec)}</th></tr>")
            style = " style='background:rgba(245,158,11,0.15)'" if len(set(cells)) > 1 else ""
            tds = "".join(f"<td style='{_TD};max-width:24em;overflow-wrap:anywhere'>{e(c)}"
                          "</td>" for c in cells)
            body.append(f"<tr{style}><td style='{_TD}'><b>{e(label)}</b></td>{tds}</tr>")
        notes = "highlighted rows differ"
        if self.goals:
            notes = "best: " + "; ".join(f"{g.word} for {name} (by {g.by})"
                                         for name, g in self.goals.items()) + " · " + notes
        return (f"<table style='font-size:12px'><thead><tr><th></th>{head}</tr></thead>"
                f"<tbody>{''.join(body)}"
                f"</tbody></table><div style='opacity:0.75;font-size:0.9em'>{e(notes)}</div>")

    def diff_html(self) -> str:
        """The snapshot diff as an HTML list: each run's added, removed and changed files."""
        import html

        e = html.escape
        base = self.runs[0]
        items = []
        colors = {"+": "#16a34a", "-": "#dc2626", "~": "#a16207"}
        for d in self.diffs:
            files = []
            for sign, paths in (("+", d.added), ("-", d.removed), ("~", d.changed)):
                files += [f"<div style='color:{colors[sign]};margin:0;line-height:1.4'>"
                          f"<code>{sign} {e(p)}</code></div>" for p in paths[:LISTED_FILES]]
                if len(paths) > LISTED_FILES:
                    files.append(f"<div><code>{sign} … and {len(paths) - LISTED_FILES} more"
                                 "</code></div>")
            items.append(f"<li><code>{e(d.run)}</code>: {e(d.counts())}{''.join(files)}</li>")
        return (f"<div><b>snapshot diff</b> against <code>{e(base.id)}</code>"
                f"<ul style='margin-top:2px'>{''.join(items)}</ul></div>")

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a notebook: the compare widget a face registered, else the table as HTML."""
        from jupyter_compute import runkinds

        live = runkinds.view_function(VIEW)
        shown = live(self) if live is not None else None
        if shown is not None:
            return shown._repr_mimebundle_()  # type: ignore[no-any-return]
        return self.bundle()

    def __repr__(self) -> str:
        return f"<Comparison of {len(self.runs)} runs: {', '.join(r.id for r in self.runs)}>"


# -- building one ------------------------------------------------------------------------


def compare(runs: Sequence[str | Run], workspace: Workspace) -> Comparison:
    """Compare ``runs`` (ids, unique suffixes, or handles), in the order given; a sweep
    stands for its trials. Raises ``UsageError`` for an unknown id or fewer than two runs.

    >>> compare(["7f3a", "7f3b"], ws).to_dict()["snapshot_diff"][0]["changed"]
    ['train.py']
    """
    from jupyter_compute.runs import Run

    handles: list[Run] = []
    sweep = None
    for given in runs:
        run = given if isinstance(given, Run) else _get(str(given), workspace)
        trials = _trials(run)
        if trials is not None:
            sweep = run.id
        for one in trials if trials is not None else [run]:
            if all(h.id != one.id for h in handles):  # each run once, where first named
                handles.append(one)
    if len(handles) < 2:
        got = "no runs" if not handles else f"only {handles[0].id}"
        raise UsageError(f"compare needs two runs or more (a sweep counts as its trials), got "
                         f"{got}; list runs with 'jupyter-compute runs'")
    sweeps = _sweep_states(handles)
    columns = [_column(run, sweeps) for run in handles]
    goals = _goals(columns, _sweep_goals(sweeps))
    for col in columns:
        col.metrics = {name: _summarize(col.curves[name], goals[name])
                       for name in goals if name in col.curves}
    base = columns[0]
    base_files = _files(workspace, base.snapshot)
    diffs = [_snapshot_diff(workspace, base, base_files, col) for col in columns[1:]]
    return Comparison(columns, goals, diffs, workspace,
                      sweep=sweep if len(runs) == 1 else None)


def _get(run_id: str, workspace: Workspace) -> Run:
    from jupyter_compute.runs import Run

    try:
        return Run.get(run_id, workspace)
    except RunNotFoundError as exc:  # a bad argument: exit 2 from the CLI
        raise UsageError(str(exc)) from None


def _trials(run: Run) -> list[Run] | None:
    """A sweep's trial runs, by trial number; None for a run that is not a sweep."""
    trials = getattr(run, "trials", None)
    if trials is None:
        return None
    from jupyter_compute.runs import Run

    found = []
    for t in sorted(trials(), key=lambda t: t.get("index") or 0):
        if t.get("run_id"):
            found.append(Run.get(t["run_id"], run.workspace))
    return found


def _sweep_states(handles: list[Run]) -> dict[str, dict[str, Any]]:
    """The ``sweep.json`` of each sweep the runs are trials of, read once."""
    from jupyter_compute import protocol
    from jupyter_compute.sweep.controller import STATE

    parents = {h.record.parent_id for h in handles if h.record.parent_id}
    return {parent: protocol.read_json(str(handles[0].workspace.run_dir(parent) / STATE)) or {}
            for parent in sorted(parents)}


def _sweep_goals(states: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """``{metric: lower_is_better}`` from the sweeps' primary metrics."""
    goals: dict[str, bool] = {}
    for state in states.values():
        metric = state.get("primary_metric") or {}
        if metric.get("name"):
            goals[metric["name"]] = str(metric.get("goal", "")).lower() == "minimize"
    return goals


def _column(run: Run, sweeps: dict[str, dict[str, Any]]) -> RunColumn:
    from jupyter_compute import runinfo

    status = run.status().value
    r = run.record
    curves: dict[str, list[tuple[Any, float, float | None]]] = {}
    for name, records in run.metrics().items():
        points = [(rec.get("step"), float(rec["value"]), rec.get("time")) for rec in records
                  if rec.get("kind", "scalar") == "scalar" and _is_number(rec.get("value"))]
        if points:
            curves[name] = points
    return RunColumn(
        id=r.id, name=r.name, kind=r.kind, status=status, target=r.target,
        arguments=[str(a) for a in r.arguments], params=runinfo.params(run), tags=run.tags(),
        metrics={}, curves=curves, started=r.started, ended=r.ended,
        environment=_environment(run), git=dict(r.git or dict.fromkeys(
            ("repository", "branch", "commit", "dirty"))),
        snapshot=(r.snapshot or {}).get("id"), parent_id=r.parent_id,
        trial=_trial_index(run, sweeps.get(r.parent_id or "")))


def _trial_index(run: Run, sweep_state: dict[str, Any] | None) -> int | None:
    for t in (sweep_state or {}).get("trials") or []:
        if t.get("run_id") == run.id:
            return int(t["index"])
    return None


def _environment(run: Run) -> dict[str, Any] | None:
    """What the run asked for (source, python, requirement lines, image) and what it got
    (the built environment's key, whether it was reused, which installer built it)."""
    from jupyter_compute import protocol

    asked = (run.record.spec or {}).get("environment") or {}
    try:
        st = protocol.read_json(str(run.workspace.run_dir(run.id) / protocol.STATUS)) or {}
    except ValueError:
        st = {}
    got = st.get("environment") if isinstance(st, dict) else None
    got = got if isinstance(got, dict) else {}
    if not asked and not got:
        return None
    return {"source": asked.get("source"), "python": asked.get("python"),
            "requirements": list(asked.get("requirements") or []),
            "image": asked.get("image") or asked.get("dockerfile"),
            "key": got.get("key"), "reused": got.get("reused"),
            "installer": got.get("installer")}


def _goals(columns: list[RunColumn], from_sweeps: dict[str, bool]) -> dict[str, MetricGoal]:
    goals = {}
    for name in _union(c.curves for c in columns):
        if name in from_sweeps:
            goals[name] = MetricGoal(name, from_sweeps[name], "the sweep's goal")
        else:
            goals[name] = MetricGoal(name, lower_is_better(name), "its name")
    return goals


def lower_is_better(metric: str) -> bool:
    """Whether a metric named ``metric`` is better lower, guessed from its name.

    >>> lower_is_better("val_loss"), lower_is_better("trainMSE"), lower_is_better("Accuracy")
    (True, True, False)
    """
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", metric)
    words = set(re.split(r"[^a-z0-9]+", spaced.lower()))
    lowered = metric.lower()
    return bool(words & set(LOWER_IS_BETTER)) or "loss" in lowered or "error" in lowered


def _summarize(points: list[tuple[Any, float, float | None]], goal: MetricGoal
               ) -> dict[str, Any]:
    last_step, last, _ = points[-1]
    finite = [(v, s) for s, v, _ in points if math.isfinite(v)]
    best = best_step = None
    if finite:
        pick = min if goal.lower_is_better else max
        best, best_step = pick(finite, key=lambda vs: vs[0])
    return {"last": last, "last_step": last_step, "best": best, "best_step": best_step,
            "count": len(points)}


# -- snapshot diffs ----------------------------------------------------------------------


def _files(workspace: Workspace, snapshot_id: str | None) -> dict[str, list[Any]]:
    """``{path: [sha256, size, mode]}`` of a snapshot; empty when its manifest is gone."""
    if not snapshot_id:
        return {}
    from jupyter_compute.snapshot import load_manifest

    try:
        return dict(load_manifest(workspace.dir, snapshot_id).get("files") or {})
    except (ComputeError, ValueError, OSError):
        return {}


def _snapshot_diff(workspace: Workspace, base: RunColumn, base_files: dict[str, list[Any]],
                   col: RunColumn) -> SnapshotDiff:
    d = SnapshotDiff(base.id, col.id)
    if col.snapshot == base.snapshot:
        return d
    files = _files(workspace, col.snapshot)
    for run, found in ((base, base_files), (col, files)):
        if not found:
            gone = (run.snapshot or "?")[:12]
            d.missing = f"no snapshot manifest for {run.id} (snapshots/{gone}… is gone)"
            return d
    d.added = sorted(set(files) - set(base_files))
    d.removed = sorted(set(base_files) - set(files))
    d.changed = sorted(p for p in set(files) & set(base_files)
                       if files[p][0] != base_files[p][0] or files[p][2:] != base_files[p][2:])
    return d


def _unified(store: Any, path: str, old_run: str, old: list[Any] | None, new_run: str,
             new: list[Any] | None) -> str:
    """One file's unified diff (``None``: not in that snapshot)."""
    import difflib

    old_label = f"{old_run}/{path}" if old else "/dev/null"
    new_label = f"{new_run}/{path}" if new else "/dev/null"
    texts: list[list[str]] = []
    for entry, label in ((old, old_label), (new, new_label)):
        if entry is None:
            texts.append([])
            continue
        if int(entry[1]) > DIFF_MAX_BYTES:
            return (f"{label}: {int(entry[1]) // 1024} KiB is too large to diff here; "
                    "the file differs\n")
        blob = store.path(entry[0])
        try:
            data = blob.read_bytes()
        except OSError:
            raise ComputeError(f"the blob of {label} ({entry[0][:12]}…) is not in the blob "
                               f"store {store.root}; was the workspace copied without it?"
                               ) from None
        text = _text(data)
        if text is None:
            return f"Binary files {old_label} and {new_label} differ\n"
        texts.append(text.splitlines(keepends=True))
    lines = list(difflib.unified_diff(texts[0], texts[1], old_label, new_label))
    # a last line without its newline still ends a line of the diff
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
                   for line in lines)


def _text(data: bytes) -> str | None:
    """The bytes as text, or None for a binary file (a NUL byte, or not UTF-8)."""
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# -- small pieces ------------------------------------------------------------------------


def _union(dicts: Iterable[dict[str, Any]]) -> list[str]:
    """Keys of all the dicts, in order of first appearance."""
    seen: dict[str, None] = {}
    for d in dicts:
        seen.update(dict.fromkeys(d))
    return list(seen)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_number(value: Any) -> Any:
    """NaN and infinities are not JSON: they read as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _metric(run: RunColumn, name: str, which: str) -> str | None:
    m = run.metrics.get(name)
    if not m or m[which] is None:
        return None
    step = m[f"{which}_step"]
    return format_value(m[which]) + ("" if step is None else f" @{step}")


def _mode(entry: list[Any]) -> str:
    return oct(int(entry[2]) & 0o7777)[2:] if len(entry) > 2 else "?"


def _cell(value: Any) -> str:
    return format_value(value) if isinstance(value, float) else str(value)


def _git(git: dict[str, Any]) -> str | None:
    if not git.get("commit"):
        return None
    return (f"{git['commit'][:10]}{' dirty' if git.get('dirty') else ''}"
            f"{' (' + git['branch'] + ')' if git.get('branch') else ''}")


def _env_source(env: dict[str, Any] | None) -> str:
    if not env:
        return "target's python"
    parts = [env.get("source") or "", env.get("image") or ""]
    if env.get("python") and "python" not in (env.get("source") or ""):
        parts.append(f"python {env['python']}")
    return " · ".join(p for p in parts if p) or "-"


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ending with … when cut."""
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def _clip_left(text: str, width: int) -> str:
    """Cut from the left: a run id's unique end stays."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:]


def _did_you_mean(path: str, paths: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(path, paths, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
