"""``ComputeTarget``: the template every kind of target fills in.

The public methods (``submit``, ``status``, ``cancel``) validate, snapshot,
record and check liveness the same way for every kind; a subclass supplies the
hooks that differ — how blobs reach the target (``sync``), how the agent starts
there (``launch``), how run-folder files are read and written (``read``,
``write``), whether the agent still lives (``alive``) and how to ask it to stop
(``request_cancel``). A subclass that misses a hook fails when it is
constructed, not in the middle of a run.
"""

from __future__ import annotations

import json
import os
import re
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import ComputeError, TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runspec import RunSpec, masked_environment, secret_names, secret_payload

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from jupyter_compute.runs import Run
    from jupyter_compute.snapshot import Snapshot
    from jupyter_compute.store import RunRecord
    from jupyter_compute.workspace import Workspace

#: Files that make the run-side runtime; they travel to every target.
RUNTIME_MODULES = ("protocol.py", "tracking.py", "agent.py", "notebook_runner.py")


class ComputeTarget(ABC):
    """A place where runs execute. Subclasses set ``kind`` and fill the hooks."""

    kind: ClassVar[str]
    #: Options accepted in ``targets.yml`` and by ``attach``: name → (type, help).
    options: ClassVar[dict[str, tuple[Any, str]]] = {}

    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        self.name = name
        self.config = config
        self.workspace = workspace

    # -- the template: the same for every kind -------------------------------------------

    def submit(self, spec: RunSpec) -> Run:
        """Validate, snapshot, record and launch ``spec``; return its ``Run`` at once."""
        from jupyter_compute.runs import Run
        from jupyter_compute.snapshot import (
            DEFAULT_MAX_BYTES,
            DEFAULT_MAX_CHANGED_FILES,
            take_snapshot,
        )

        self.validate(spec)
        snap = take_snapshot(spec.source_dir, self.workspace.dir,
                             max_bytes=spec.snapshot_max_bytes or DEFAULT_MAX_BYTES,
                             max_changed_files=spec.snapshot_max_files
                             or DEFAULT_MAX_CHANGED_FILES, extra_files=spec.extra_files)
        if spec.script not in snap.files:
            raise UsageError(f"{spec.script} is excluded from the snapshot by an ignore rule "
                             f"in {spec.source_dir}; un-ignore it to run it")
        self.prepare()
        record = self._record(spec, snap)
        record.spec = self.agent_spec(record, spec, snap)
        self.workspace.store.insert(record)
        try:
            self.sync(record.id, snap, record.spec)
            secrets = secret_payload(spec)
            if secrets is not None:
                self.deliver_secrets(record.id, secrets)
            self.launch(record.id)
        except Exception as exc:
            message = str(exc) if isinstance(exc, ComputeError) else \
                f"could not start the run on {self.name!r}: {exc}"
            (self.workspace.run_dir(record.id) / protocol.SECRETS).unlink(missing_ok=True)
            self._fail(record.id, message)
            if isinstance(exc, ComputeError):
                raise
            raise TargetError(message) from exc
        run = Run(record, self.workspace, target=self)
        run.warnings = list(snap.warnings)  # e.g. symlinks out of the folder, not followed
        return run

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's ``status.json``, after making sure a dead agent is noticed.

        A non-terminal run whose agent is gone becomes Failed ("agent lost"), here
        and in the target's own status file, so every reader agrees.
        """
        st = self._read_status(run_id)
        if RunStatus(st["status"]).is_terminal() or self.alive(run_id, st):
            return st
        st = self._read_status(run_id)  # it may have finished between the two reads
        if RunStatus(st["status"]).is_terminal():
            return st
        who = st.get("agent", {}).get("pid")
        st.update(status=RunStatus.FAILED.value, ended=protocol.utcnow(), exit_code=None,
                  error=f"agent lost: the agent{f' (pid {who})' if who else ''} died "
                  "before the run ended (killed, or the machine restarted)")
        st.setdefault("history", []).append([st["status"], st["ended"]])
        self.write(run_id, protocol.STATUS, json.dumps(st, indent=1).encode())
        self.abandon(run_id, st)
        return st

    def cancel(self, run_id: str) -> None:
        """Ask the run to stop; the agent ends it as Canceled (SIGTERM, then SIGKILL)."""
        if not RunStatus(self.status(run_id)["status"]).is_terminal():
            self.request_cancel(run_id)

    def tail(self, run_id: str, offset: int = 0) -> bytes:
        """The run's log from byte ``offset`` on (what is there now)."""
        return self.read(run_id, protocol.LOG, offset)

    # -- hooks a kind fills in ---------------------------------------------------------

    def validate(self, spec: RunSpec) -> None:  # noqa: B027 - optional hook
        """Refuse a spec this kind cannot run, before anything is written."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Prove the target works (connect once, find Python); called by ``attach``."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Make the target ready (connect, start a cluster); called before each sync."""

    @abstractmethod
    def agent_spec(self, record: RunRecord, spec: RunSpec, snap: Snapshot) -> dict[str, Any]:
        """The ``spec.json`` the agent reads on this target (see ``base_agent_spec``)."""

    @abstractmethod
    def sync(self, run_id: str, snap: Snapshot, agent_spec: dict[str, Any]) -> None:
        """Put the snapshot's missing blobs, its manifest and ``agent_spec`` on the target."""

    @abstractmethod
    def launch(self, run_id: str) -> None:
        """Start the agent on the target, detached; return as soon as it is started."""

    @abstractmethod
    def read(self, run_id: str, name: str, offset: int = 0) -> bytes:
        """Bytes of run-folder file ``name`` from ``offset``; ``b""`` if it does not exist."""

    @abstractmethod
    def write(self, run_id: str, name: str, data: bytes) -> None:
        """Replace run-folder file ``name`` atomically."""

    @abstractmethod
    def alive(self, run_id: str, status: dict[str, Any]) -> bool:
        """Whether the agent of a non-terminal run still lives (or may still start)."""

    @abstractmethod
    def request_cancel(self, run_id: str) -> None:
        """Tell the agent to stop the run."""

    def deliver_secrets(self, run_id: str, payload: bytes) -> None:  # noqa: B027
        """Put the ``secrets`` file (mode 0600) where the agent reads it before starting."""

    def abandon(self, run_id: str, status: dict[str, Any]) -> None:  # noqa: B027
        """Clean up after a lost agent (end the script it left running)."""

    def outputs_dir(self, run_id: str) -> Path:
        """A local folder with the run's outputs (fetched back first where needed)."""
        return self.workspace.run_dir(run_id) / protocol.OUTPUTS

    def start(self) -> None:
        """Start what the target runs on (a cluster's head); most kinds have nothing to."""
        raise UsageError(f"{self.name!r} is a {self.kind} target: there is nothing to start")

    def stop(self) -> None:
        """Stop what ``start`` started (runs on it end); most kinds have nothing to stop."""
        raise UsageError(f"{self.name!r} is a {self.kind} target: there is nothing to stop")

    def nodes(self) -> dict[str, int] | None:
        """Node counts ``{current, min, max}`` for targets that scale; None otherwise."""
        return None

    def describe(self) -> dict[str, Any]:
        """What ``targets`` shows: name, kind, options (never secrets)."""
        return {"name": self.name, "type": self.kind, **self.config}

    # -- shared pieces ---------------------------------------------------------------

    def base_agent_spec(self, record: RunRecord, spec: RunSpec) -> dict[str, Any]:
        """The fields of ``spec.json`` every kind shares; a kind adds its paths."""
        return {
            "run_id": record.id, "kind": spec.kind or "script", "script": spec.script,
            "parameters": dict(spec.parameters), "kernel": spec.kernel,
            "arguments": list(spec.arguments), "interpreter": spec.python,
            "requirements": spec.requirements,
            # Secret values stay out (`***`); see runspec.secret_payload for their way.
            "environment_variables": masked_environment(spec),
            "secret_env": secret_names(spec),
            "max_run_duration_seconds": spec.max_run_duration_seconds,
            "cancel_grace_seconds": spec.cancel_grace_seconds,
        }

    def _read_status(self, run_id: str) -> dict[str, Any]:
        raw = self.read(run_id, protocol.STATUS)
        try:
            st = json.loads(raw) if raw else None
        except ValueError:
            st = None
        return st or {"status": RunStatus.QUEUED.value}

    def _record(self, spec: RunSpec, snap: Snapshot) -> RunRecord:
        """Create the run's local folder (Queued) and its record, not yet stored."""
        from jupyter_compute.store import RunRecord

        name = spec.display_name
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
        slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "run"
        self.workspace.runs_dir.mkdir(parents=True, exist_ok=True)
        while True:  # ids are unique by construction of their folder
            run_id = f"{stamp}-{slug}-{os.urandom(2).hex()}"
            try:
                os.mkdir(self.workspace.run_dir(run_id), 0o700)
                break
            except FileExistsError:
                continue
        created = protocol.utcnow()
        protocol.write_json_atomic(str(self.workspace.run_dir(run_id) / protocol.STATUS), {
            "run_id": run_id, "status": RunStatus.QUEUED.value, "created": created,
            "history": [[RunStatus.QUEUED.value, created]]})
        record = RunRecord(
            id=run_id, name=name, target=self.name, kind=spec.kind or "script",
            status=RunStatus.QUEUED.value, created=created, script=spec.script,
            arguments=list(spec.arguments), source_dir=str(spec.source_dir),
            snapshot={"id": snap.id, **vars(snap.stats)},
            git=snap.git.to_dict() if snap.git else None, parent_id=spec.parent_id)
        return record

    def _fail(self, run_id: str, message: str) -> None:
        now = protocol.utcnow()
        path = self.workspace.run_dir(run_id) / protocol.STATUS
        st = protocol.read_json(str(path)) or {}
        st.update(status=RunStatus.FAILED.value, ended=now, error=message)
        st.setdefault("history", []).append([RunStatus.FAILED.value, now])
        protocol.write_json_atomic(str(path), st)
        self.workspace.store.update(run_id, status=RunStatus.FAILED.value, ended=now,
                                    error=message)


class HostFolderTarget(ComputeTarget):
    """A target whose run folders are on this machine's disk (local, docker, an embedded
    Ray cluster), so reading and writing them is plain file access."""

    def read(self, run_id: str, name: str, offset: int = 0) -> bytes:
        try:
            with open(self.workspace.run_dir(run_id) / name, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def write(self, run_id: str, name: str, data: bytes) -> None:
        path = self.workspace.run_dir(run_id) / name
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)


def runtime_files() -> dict[str, bytes]:
    """The run-side runtime, as files for a target's ``jupyter_compute/`` folder.

    Shipped with every run so the agent runs, and ``from jupyter_compute.tracking
    import get_run`` works in the script, with nothing but Python installed there.
    """
    here = Path(__file__).resolve().parent.parent
    files = {name: (here / name).read_bytes() for name in RUNTIME_MODULES}
    files["__init__.py"] = b'"""jupyter_compute run-side runtime: tracking and agent."""\n'
    return files


def runtime_digest() -> str:
    """A short hash of the runtime files, so each version is shipped once."""
    import hashlib

    h = hashlib.sha256()
    for name, data in sorted(runtime_files().items()):
        h.update(name.encode() + b"\0" + data)
    return h.hexdigest()[:16]
