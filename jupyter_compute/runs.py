"""``Run``: a handle on one run, from the process that submitted it or any other.

::

    from jupyter_compute import Run, submit

    run = submit("train.py", target="local", arguments=["--lr", "0.01"])
    for line in run.follow():          # every log line, up to the terminal state
        print(line, end="")
    run.status()                       # RunStatus.COMPLETED
    run.metrics()["loss"][-1]          # {"value": 0.12, "step": 99, "time": …}

    Run.get("20261126-0931-train-7f3a")  # reattach from any process, any time

Everything is read from the run folder on the target through the target's
``read``; what the agent reports is mirrored into the workspace's store.
``Run.get`` gives the handle of the run's kind (``runkinds``): a ``Sweep`` for a
sweep, which is a ``Run`` whose children are its trials.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import ComputeError, RunFailedError, UsageError
from jupyter_compute.protocol import RunStatus

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any, TypeVar

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.store import RunRecord
    from jupyter_compute.summary import StaticSummary
    from jupyter_compute.targets.base import Target
    from jupyter_compute.workspace import Workspace

_MIRRORED = ("status", "started", "ended", "exit_code", "error")


class Run:
    """One run: its status, log, metrics and outputs, wherever it executes."""

    #: Seconds between polls: quick at first (a person waits on short runs), then
    #: easing off after a few seconds: (fast, slow, how long fast lasts).
    POLL = (0.01, 0.05, 5.0)

    def __init__(self, record: RunRecord, workspace: Workspace,
                 target: Target | None = None) -> None:
        self.record = record
        self.workspace = workspace
        self._target = target
        self.offset = 0  # how far ``follow`` has read the log, in bytes
        self.warnings: list[str] = []  # what the snapshot left out, and why (at submit)
        self.detail: str | None = None  # what the target says it is doing ("waiting for …")

    @classmethod
    def submit(cls, target: Target, spec: RunSpec) -> Run:
        """Submit ``spec`` to ``target`` and return the new run's handle at once.

        >>> run = Run.submit(get_target("local"), resolve_spec("train.py"))
        """
        record, warnings = target.submit(spec)
        run = cls(record, target.workspace, target=target)
        run.warnings = warnings  # what the snapshot left out, and why
        return run

    @classmethod
    def get(cls, run_id: str, workspace: Workspace | str | Path | None = None) -> Run:
        """Reattach to run ``run_id`` (a unique suffix of the id is enough).

        The handle is of the run's kind: ``Run.get`` of a sweep gives a ``Sweep``.
        """
        from jupyter_compute import runkinds
        from jupyter_compute import workspace as ws_mod

        ws = workspace if isinstance(workspace, ws_mod.Workspace) else \
            ws_mod.find(explicit=workspace, create=False)
        return runkinds.handle(ws.store.get(run_id), ws)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def target(self) -> Target:
        if self._target is None:
            from jupyter_compute.attached import get_target

            self._target = get_target(self.record.target, self.workspace)
        return self._target

    # -- status ----------------------------------------------------------------------

    def status(self) -> RunStatus:
        """The current status, read from the target (and mirrored into the store)."""
        if RunStatus(self.record.status).is_terminal():
            return RunStatus(self.record.status)
        st = self.target.status(self.id)
        self.detail = st.get("detail")
        seen = {k: st.get(k) for k in _MIRRORED}
        if any(value != getattr(self.record, k) for k, value in seen.items()):
            # The store takes it only if it moves the run forward; what it holds after
            # (perhaps a newer status another reader stored) is the truth this handle keeps.
            accepted = self.workspace.store.advance(self.id, str(seen.pop("status")), **seen)
            for key in _MIRRORED:
                setattr(self.record, key, getattr(accepted, key))
        return RunStatus(self.record.status)

    def wait(self, timeout: float | None = None, raise_on_failure: bool = False) -> RunStatus:
        """Block until the run ends (or ``timeout`` seconds pass); return its status."""
        start = time.monotonic()
        while True:
            seen = self.change_count()
            if (status := self.status()).is_terminal():
                break
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                return status
            # a host that pushes wakes this at once; others are polled at the interval
            self.wait_change(seen, self._poll_interval(waited))
        if raise_on_failure and status is not RunStatus.COMPLETED:
            raise RunFailedError(self.id, status.value, self.record.error or "")
        return status

    def change_count(self) -> int:
        """A number that moves whenever news of the run arrives from a host that pushes it
        (an ssh host's session); 0 where the host is read by polling. Read it, then read
        the run, then ``wait_change(count, …)``: nothing that arrived in between is missed.
        """
        return self.target.change_count(self.id)

    def wait_change(self, since: int, timeout: float) -> None:
        """Wait until ``change_count()`` moves from ``since`` or ``timeout`` seconds pass
        (the whole timeout where the host is polled). A follower that waits here instead
        of sleeping wakes as soon as a pushed line arrives, and costs nothing meanwhile.

        >>> seen = run.change_count(); lines = run.read_log(offset); run.wait_change(seen, 1)
        """
        self.target.wait_change(self.id, since, timeout)

    def _poll_interval(self, waited: float) -> float:
        fast, slow, fast_period = self.POLL
        return fast if waited < fast_period else slow

    # -- log -------------------------------------------------------------------------

    def read_log(self, offset: int = 0) -> bytes:
        """The log's bytes from ``offset`` on, as they are now."""
        return self.target.tail(self.id, offset)

    def log(self) -> str:
        """The whole log so far, as text."""
        return self.read_log().decode(errors="replace")

    def follow(self, offset: int | None = None) -> Iterator[str]:
        """Yield log lines (with their newline) from byte ``offset`` until the run ends.

        ``self.offset`` always points just past the last line yielded, so a follower
        that stops can resume there without losing or repeating a line.
        """
        if offset is not None:
            self.offset = offset
        start = time.monotonic()
        while True:
            seen = self.change_count()  # before reading: nothing slips by
            done = self.status().is_terminal()  # read before the log: the log is then final
            data = self.read_log(self.offset)
            end = data.rfind(b"\n") + 1 if not done else len(data)
            for line in data[:end].splitlines(keepends=True):
                self.offset += len(line)  # before yielding: the consumer may stop here
                yield line.decode(errors="replace")
            if done:
                return
            if not end:
                waited = time.monotonic() - start
                self.wait_change(seen, self._poll_interval(waited))

    # -- results ---------------------------------------------------------------------

    def read_metrics(self, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """Metric records appended since byte ``offset``, and the offset to read on from.

        Only whole lines count: a record the script is still writing is read next time.
        """
        records, used = protocol.whole_json_lines(self.target.read(self.id, protocol.METRICS,
                                                                   offset))
        return records, offset + used

    def metrics(self, rank: int | None = 0) -> dict[str, list[dict[str, Any]]]:
        """Logged metrics: ``{name: [{"value", "step", "time", "kind"}, …]}``; of a
        multi-node run rank 0's, or ``rank=R``'s, or with ``rank=None`` every rank's
        (each record with its ``"rank"``)."""
        return protocol.parse_metrics(self.target.read(self.id, protocol.METRICS), rank=rank)

    def tags(self) -> dict[str, Any]:
        """Tags set with ``run.tag(name, value)``; the last value of each wins."""
        found = protocol.parse_metrics(self.target.read(self.id, protocol.METRICS), kind="tag")
        return {name: recs[-1]["value"] for name, recs in found.items()}

    def progress(self) -> dict[str, Any] | None:
        """A notebook run's current cell: ``{"cell": 3, "of": 12, "source": "…"}``."""
        found = protocol.parse_metrics(self.target.read(self.id, protocol.METRICS),
                                       kind="progress")
        return found["progress"][-1]["value"] if found.get("progress") else None

    def outputs(self) -> list[Path]:
        """The files in the run's ``outputs/`` (fetched to this machine first if needed)."""
        folder = self.target.outputs_dir(self.id)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.rglob("*") if p.is_file())

    def download(self, dest: str | Path) -> list[Path]:
        """Copy the run's outputs into folder ``dest`` (made if needed), keeping their
        paths under ``outputs/``; works for every target (remote outputs are fetched
        first). A link that leads outside ``outputs/`` is not followed. Returns the copies.

        >>> run.download("results")        # [Path("results/model.json"), …]
        """
        import shutil

        folder = self.target.outputs_dir(self.id)
        root = folder.resolve()
        copied = []
        for path in self.outputs():
            real = path.resolve()
            if root not in real.parents:
                continue
            copy = Path(dest, path.relative_to(folder))
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(real, copy)
            copied.append(copy)
        return copied

    def cancel(self, reason: str | None = None) -> RunStatus:
        """Ask the run to stop; returns at once (``wait()`` to see it Canceled). ``reason``
        goes into the run's log and error (a sweep's policy says why it stopped a trial)."""
        self.target.cancel(self.id, reason)
        return self.status()

    def primary_metric(self) -> dict[str, Any] | None:
        """The metric a list of runs shows: ``{"name", "value", "step"}`` of the first
        numeric one logged, or None."""
        for name, records in self.metrics().items():
            value = records[-1]["value"] if records else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return {"name": name, "value": value, "step": records[-1].get("step")}
        return None

    # -- forms -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The ``show --json`` shape: id, name, target, status, exit_code, times, snapshot, git,
        the preparation (``prepare_seconds``: snapshot + environment, before the script
        started; ``environment``: its key, whether it was reused, which installer built it).
        ``show --json`` adds ``runinfo.details``: params, tags, outputs."""
        self.status()
        d = self.record.to_dict()
        try:  # the agent's status.json, as mirrored into the local run folder
            st = protocol.read_json(str(self.workspace.run_dir(self.id) / protocol.STATUS))
        except ValueError:
            st = None
        st = st if isinstance(st, dict) else {}
        d["prepare_seconds"] = st.get("prepare_seconds")
        d["environment"] = st.get("environment")
        try:
            job = self.target.job(self.id)
        except ComputeError:  # the target was detached: the record is all there is
            job = None
        if job is not None:  # a batch queue's job (slurm): its id and state there
            d["target_job"] = job
        return d

    def describe(self) -> str:
        """What ``jupyter-compute show`` prints: one ``key: value`` line per field."""
        from jupyter_compute.units import format_size

        d = self.to_dict()
        lines = [f"{key + ':':<12} {d[key] if d[key] is not None else '-'}" for key in (
            "id", "name", "target", "status", "exit_code", "created", "started", "ended",
            "script", "arguments", "source_dir")]
        s = d["snapshot"]
        lines.append(f"{'snapshot:':<12} {s['id'][:12]} {s['files']} files "
                     f"({format_size(s['bytes'])}), {s['new_files']} new "
                     f"({format_size(s['new_bytes'])})")
        g = d["git"]
        if g.get("commit"):
            lines.append(f"{'git:':<12} {g['repository'] or '-'} {g['branch']}@{g['commit'][:10]}"
                         f"{' (dirty)' if g['dirty'] else ''}")
        if d["prepare_seconds"] is not None:
            env = d["environment"]
            how = "" if not env else (f", environment {env['key']} reused" if env.get("reused")
                                      else f", environment {env['key']} built with "
                                      f"{env.get('installer')}")
            lines.append(f"{'prepared:':<12} {d['prepare_seconds']:.2f}s (before the script "
                         f"started; not run time{how})")
        stopped = protocol.early_stop_reason(d["status"], d["error"])
        if stopped:  # a sweep's policy ended it: not an error, a decision with a reason
            lines[3] = f"{'status:':<12} {d['status']} (stopped early by its sweep)"
            lines.append(stopped)
        elif d["error"]:
            lines.append(f"{'error:':<12} {d['error']}")
        return "\n".join(lines)

    def summary(self, tail_lines: int = 15, fetch_outputs: bool = True,
                log_tail: list[str] | None = None) -> StaticSummary:
        """The run's current state as static text/HTML: status, log tail, last metrics,
        each scalar metric's series (drawn as a chart) and the output files.

        ``fetch_outputs=False`` lists only the outputs already on this machine (no
        network: a kernel that is shutting down cannot wait on a remote host).
        ``log_tail``: the last lines, when the caller has them already (a widget that
        followed the log), so a long log is not read again.
        """
        from jupyter_compute.summary import Summary

        status = self.status().value
        tail = (log_tail if log_tail is not None else self.log().splitlines())[-tail_lines:]
        scalars = {name: recs for name, recs in self.metrics().items()
                   if recs[-1]["kind"] == "scalar"}
        last = {name: (recs[-1]["value"], recs[-1]["step"]) for name, recs in scalars.items()}
        series = {name: ([i if rec["step"] is None else rec["step"]
                          for i, rec in enumerate(recs)], [rec["value"] for rec in recs])
                  for name, recs in scalars.items()}
        folder = (self.target.outputs_dir(self.id) if fetch_outputs
                  else self.workspace.run_dir(self.id) / protocol.OUTPUTS)
        outputs = sorted((str(p.relative_to(folder)), p.stat().st_size)
                         for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        r = self.record
        return Summary(r.id, r.name, r.target, status, r.started, r.ended, r.error, tail, last,
                       series=series, outputs=outputs)

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.record.status} on {self.record.target}>"

    def _ipython_display_(self) -> None:
        """In a notebook a run shows its kind's live view, displayed so that its output
        becomes the static summary once the run ends or the kernel goes (``runkinds``)."""
        from jupyter_compute import runkinds

        runkinds.display(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """What a run looks like to a renderer that is not IPython's display: its static
        summary (a live widget outside a registered display would outlive its model)."""
        return self.summary()._repr_mimebundle_()


if TYPE_CHECKING:
    _Parent = TypeVar("_Parent", bound="ParentRun")


class FolderWatch:
    """Whether a parent's controller should read a child run now.

    Where the child's folder is on this machine (``Host.folders_here``), two ``stat``
    calls tell whether its agent replaced status.json or its script appended metrics,
    so a tick costs microseconds and can be short. An unchanged child is still read
    every ``FULL_EVERY`` seconds: a dead agent changes no file, and before its agent
    starts only the launcher can tell (a job its scheduler failed). A child elsewhere
    (``folder`` None) is read every time.
    """

    FULL_EVERY = 1.0

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.stamp: tuple[int, ...] = ()
        self.read_at = 0.0

    def changed(self) -> bool:
        if self.folder is None:
            return True
        stamp: tuple[int, ...] = ()
        for name in (protocol.STATUS, protocol.METRICS):
            try:
                st = os.stat(self.folder / name)
                stamp += (st.st_mtime_ns, st.st_ino, st.st_size)
            except FileNotFoundError:
                stamp += (0, 0, 0)
        now = time.monotonic()
        if stamp == self.stamp and now - self.read_at < self.FULL_EVERY:
            return False
        self.stamp, self.read_at = stamp, now
        return True


class ParentRun(Run):
    """A run of runs (a sweep, a pipeline): a detached controller, started by
    ``launch_controller``, starts its children — runs whose ``parent_id`` is its id.

    The controller runs in a session of its own, so it outlives the process (a kernel,
    a CLI) that started it; cancel reaches the children even when it has died.
    """

    #: The controller's module, run as ``python -m MODULE RUN_FOLDER``.
    CONTROLLER = ""
    #: Controllers started from this process, kept so they are reaped.
    _started: list[Any] = []

    @classmethod
    def launch_controller(cls, folder: Path, workspace: Any) -> None:
        """Start this kind's controller on the run folder ``folder``."""
        import subprocess
        import sys

        cls._started[:] = [p for p in cls._started if p.poll() is None]
        with open(folder / protocol.LOG, "ab") as log:  # a crash at import lands in the log
            cls._started.append(subprocess.Popen(
                [sys.executable, "-m", cls.CONTROLLER, str(folder)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                close_fds=True, cwd=str(workspace.root)))

    @classmethod
    def get(cls: type[_Parent], run_id: str, workspace: Any = None) -> _Parent:
        """Reattach to the run ``run_id`` (a unique suffix is enough), which must be of
        this class's kind."""
        run = Run.get(run_id, workspace)
        if not isinstance(run, cls):
            raise UsageError(f"run {run.id} is a {run.record.kind} run, not a "
                             f"{cls.__name__.lower()}; list runs with 'jupyter-compute runs'")
        return run

    @property
    def folder(self) -> Path:
        return self.workspace.run_dir(self.id)

    def children(self) -> list[Run]:
        """The runs this one started, newest first."""
        ws = self.workspace
        return [Run(r, ws) for r in ws.store.list(parent_id=self.id)]

    def cancel(self, reason: str | None = None) -> RunStatus:
        """Stop it and its running children; returns at once (``wait()`` to see it)."""
        status = super().cancel(reason)
        if status.is_terminal():  # a controller that died leaves its children to us
            for child in self.children():
                if not child.status().is_terminal():
                    child.cancel(reason)
        return status
