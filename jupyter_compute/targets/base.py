"""A target is a **host** × a **launcher**, joined by one template, ``Target``.

- The *host* says where a run's folder lives and how files and commands reach it:
  this machine (``LocalHost``) or an SSH host (``SSHHost``). It syncs the snapshot's
  blobs, the manifest and the agent's spec, reads run-folder files from an offset,
  writes the cancel file, starts detached processes and tells whether one lives.
- The *launcher* says how the agent starts there: a detached process
  (``ProcessLauncher``), a Docker container, a Ray job. It may prepare something
  first (an image, a cluster), adjust the agent's spec (paths inside a container),
  and know better than the host whether the agent still lives (a container's state).

``Target.submit`` (validate, snapshot, record, sync, launch) and ``Target.status``
(with the one lost-agent rule, ``liveness.lost``) are written once here. What one
submission knows travels in a ``SubmitContext`` argument, never on ``self``, so one
target object serves many threads. A kind is a small class naming its parts::

    class LocalTarget(Target):
        kind = "local"
        host_type = LocalHost
        launcher_type = ProcessLauncher

A kind whose compute scales also derives from ``Cluster`` (``start``/``stop``/
``nodes``); no other kind has those methods. A part that misses an abstract hook
fails when the target is constructed, not in the middle of a run.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import ComputeError, TargetError, UsageError
from jupyter_compute.protocol import RunStatus
from jupyter_compute.runspec import masked_environment, secret_names, secret_payload
from jupyter_compute.targets.liveness import ClientBeat, client_state, lost

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any, ClassVar

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.snapshot import Snapshot
    from jupyter_compute.store import RunRecord
    from jupyter_compute.workspace import Workspace


#: ``ctx.scratch`` key: the host started the agent with its sync (one round trip less),
#: so the process launcher has nothing left to do.
AGENT_STARTED = "agent_started"


class SubmitContext:
    """One submission, handed to every hook: the spec, its snapshot, its record, the
    agent's ``spec.json`` as it is being built, and room for what a part must pass
    from one of its hooks to the next (``scratch``). ``environment`` is the run's resolved
    environment (``environments.resolve``), None when it has none."""

    __slots__ = ("spec", "snap", "record", "agent", "scratch", "environment")

    def __init__(self, spec: RunSpec, snap: Snapshot, record: RunRecord,
                 environment: dict[str, Any] | None = None) -> None:
        self.spec = spec
        self.snap = snap
        self.record = record
        self.environment = environment
        self.agent: dict[str, Any] = {}
        self.scratch: dict[str, Any] = {}

    @property
    def run_id(self) -> str:
        return self.record.id


class Part(ABC):  # noqa: B024 - the common constructor of hosts and launchers
    """What a host and a launcher share: the target's name, options and workspace."""

    #: Options accepted in ``targets.yml`` and by ``attach``: name → (type, help).
    options: ClassVar[dict[str, tuple[Any, str]]] = {}

    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        self.name = name
        self.config = config
        self.workspace = workspace


class Host(Part):
    """Where run folders live, and how files and commands reach them."""

    #: Whether the run's files must be in this workspace's blob store (the agent reads
    #: them there). A remote host sends new files from the source folder instead:
    #: writing thousands of local blobs would cost a first submit more than the upload.
    stores_blobs: ClassVar[bool] = True
    #: Whether the agent writes the run folder right here (the workspace's own), so two
    #: ``stat`` calls tell a controller whether a run changed: it can look every few ms.
    folders_here: ClassVar[bool] = False

    def check(self) -> None:  # noqa: B027 - optional hook
        """Prove the host works (connect once, find Python); called by ``attach``."""

    def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Start getting ready (connect) in the background while the snapshot is taken;
        ``prepare`` then finds it done, or says what failed."""

    def prepare(self) -> None:  # noqa: B027 - optional hook
        """Make the host ready (connect); called before each submission."""

    @abstractmethod
    def paths(self, ctx: SubmitContext) -> dict[str, Any]:
        """Where the agent finds things on this host: ``manifest``, ``blobs``,
        ``env_root`` and ``pythonpath`` (the runtime), as the agent's spec fields."""

    @abstractmethod
    def run_dir(self, run_id: str) -> str:
        """The run's folder on the host (an absolute path there)."""

    @abstractmethod
    def sync(self, ctx: SubmitContext) -> None:
        """Put the snapshot's missing blobs, the runtime, the manifest, ``spec.json``,
        ``status.json`` and the run's secrets (0600) into the run folder on the host."""

    @abstractmethod
    def read(self, run_id: str, name: str, offset: int = 0) -> bytes:
        """Bytes of run-folder file ``name`` from ``offset``; ``b""`` if it does not exist."""

    @abstractmethod
    def write(self, run_id: str, name: str, data: bytes) -> None:
        """Replace run-folder file ``name`` atomically (mode 0600)."""

    @abstractmethod
    def start_agent(self, run_id: str, python: str | None = None) -> None:
        """Start the agent on the run folder as a detached process; return at once."""

    @abstractmethod
    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 60
            ) -> tuple[int, bytes, bytes]:
        """Run a command (an argument list, quoted for the host's shell where it has one);
        return ``(exit code, stdout, stderr)``."""

    @abstractmethod
    def process_alive(self, ident: dict[str, Any]) -> bool | None:
        """Whether the process ``ident`` (``protocol.process_identity``) lives; None when
        the host cannot tell (then the heartbeat decides)."""

    @abstractmethod
    def heartbeat_age(self, run_id: str) -> float | None:
        """Seconds since the agent's last heartbeat, by the host's clock; None if none."""

    @abstractmethod
    def signal(self, ident: dict[str, Any], name: str, group: bool = False) -> None:
        """Send signal ``name`` (``"SIGTERM"``) to process ``ident`` or its group, if it lives."""

    def change_count(self, run_id: str) -> int:
        """A number that moves when something of the run arrives (hosts that push)."""
        return 0

    def wait_change(self, run_id: str, since: int, timeout: float) -> None:
        """Wait until ``change_count`` moves from ``since``, at most ``timeout`` seconds;
        a host that cannot tell (it is read by polling) just waits."""
        import time

        time.sleep(timeout)

    def env_root(self) -> tuple[str, str] | None:
        """``(python, folder)``: where this host keeps built environments and a Python to
        inspect them with; None if it keeps none (its images or cluster hold them)."""
        return None

    def environments(self, prune: bool = False, days: float | None = None
                     ) -> list[dict[str, Any]]:
        """The environments built on this host (``envbuild.list_envs``), or with ``prune``
        those just removed: unused by any running run (and for ``days``, if given)."""
        where = self.env_root()
        if where is None:
            raise UsageError(f"target {self.name!r} keeps no environments of its own (its "
                             "image or cluster holds the packages)")
        python, root = where
        source = (Path(__file__).resolve().parent.parent / "envbuild.py").read_bytes()
        argv = [python, "-", "prune" if prune else "list", root]
        if days is not None:
            argv += ["--days", str(days)]
        code, out, err = self.run(argv, stdin=source, timeout=600)
        if code:
            last = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise TargetError(f"could not read the environments on {self.name!r}: {last}")
        found: list[dict[str, Any]] = json.loads(out)
        return found

    def finish(self, run_id: str) -> None:  # noqa: B027 - optional hook
        """Bring back what an ended run left (log, metrics, outputs) where they are remote."""

    def outputs_dir(self, run_id: str) -> Path:
        """A local folder with the run's outputs (fetched back first where needed)."""
        return self.workspace.run_dir(run_id) / protocol.OUTPUTS


class Launcher(Part):
    """How the agent starts on a host."""

    def validate(self, spec: RunSpec) -> None:  # noqa: B027 - optional hook
        """Refuse a spec this launcher cannot run, before anything is written."""

    def check(self, host: Host) -> None:  # noqa: B027 - optional hook
        """Prove the launcher works on ``host`` (an image, a cluster); called by ``attach``."""

    def prepare(self, host: Host) -> None:  # noqa: B027 - optional hook
        """Make ready what every run needs (reach the engine, start the cluster)."""

    def agent_spec(self, host: Host, ctx: SubmitContext) -> None:  # noqa: B027
        """Adjust ``ctx.agent`` for this launcher (paths inside a container)."""

    def sync(self, host: Host, ctx: SubmitContext) -> None:  # noqa: B027 - optional hook
        """Per-run preparation before the host's sync (build an image, upload a package)."""

    @abstractmethod
    def launch(self, host: Host, ctx: SubmitContext) -> None:
        """Start the agent, detached; return as soon as it is started."""

    def alive(self, host: Host, run_id: str, status: dict[str, Any]) -> bool | None:
        """What the launcher knows of a non-terminal run's agent (a container exited);
        None to let the agent's pid and heartbeat decide."""
        return None

    def cancel(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        """After the cancel file is written: wake the agent now rather than at its poll."""
        ident = status.get("agent")
        if ident and host.process_alive(ident):
            host.signal(ident, "SIGTERM")

    def ended(self, host: Host, run_id: str, status: dict[str, Any]) -> dict[str, Any]:
        """Once a run is terminal: clean up (remove a container) and explain; idempotent."""
        return status

    def abandon(self, host: Host, run_id: str, status: dict[str, Any]) -> None:
        """After the agent was found lost: end the script it left running."""
        script = status.get("script")
        if script and host.process_alive(script):
            host.signal(script, "SIGKILL", group=True)


class ProcessLauncher(Launcher):
    """The agent as a detached process on the host, in a session of its own."""

    def validate(self, spec: RunSpec) -> None:
        if spec.docker_image:
            raise UsageError(f"target {self.name!r} runs processes, not docker images; attach "
                             "a docker target (--type docker), or an ssh target with "
                             "--docker-image, and use it")

    def check(self, host: Host) -> None:
        from jupyter_compute.wheelhouse import forget_host

        forget_host(self.workspace, self.name)  # (re)attached: ask the host afresh

    def sync(self, host: Host, ctx: SubmitContext) -> None:
        """The host's own Python builds the environment: wheels where it has no index,
        uv's wheel where it has no uv (``wheelhouse``); fetched while the run is on record,
        kept alive by this client's heartbeat."""
        if ctx.agent.get("environment"):
            from jupyter_compute.environments import spec_digest
            from jupyter_compute.wheelhouse import prepare_environment

            prepare_environment(host, self.workspace, ctx.agent, spec_digest)

    def launch(self, host: Host, ctx: SubmitContext) -> None:
        if not ctx.scratch.get(AGENT_STARTED):
            host.start_agent(ctx.run_id)


class Target:
    """The template every kind shares; a kind names its ``host_type`` and ``launcher_type``.

    ``compose`` may choose them from the options (an ssh target with a Docker image
    launches containers). Options are the union of both parts' plus the kind's own.
    """

    kind: ClassVar[str]
    host_type: ClassVar[type[Host]]
    launcher_type: ClassVar[type[Launcher]]
    options: ClassVar[dict[str, tuple[Any, str]]] = {}
    #: Log lines the live view leaves out unless asked for the whole log (a scheduler's
    #: own INFO chatter), as a regular expression; the log itself keeps them.
    quiet_log: ClassVar[str | None] = None
    #: Where the ranks of a multi-node run go (``ranks.py``: ``local``, ``ray``); None
    #: for a kind that runs on one node.
    rank_placement: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "options" not in cls.__dict__ and hasattr(cls, "host_type"):
            cls.options = {**cls.host_type.options, **cls.launcher_type.options}

    def __init__(self, name: str, config: dict[str, Any], workspace: Workspace) -> None:
        self.name = name
        self.config = config
        self.workspace = workspace
        host_cls, launcher_cls = self.compose(config)
        self.host: Host = host_cls(name, config, workspace)
        self.launcher: Launcher = launcher_cls(name, config, workspace)

    @classmethod
    def compose(cls, config: dict[str, Any]) -> tuple[type[Host], type[Launcher]]:
        """The host and launcher for these options (by default the kind's own)."""
        return cls.host_type, cls.launcher_type

    # -- the template ------------------------------------------------------------------

    def check(self) -> None:
        """Prove the target works; called by ``attach`` before anything is written."""
        self.host.check()
        self.launcher.check(self.host)

    def submit(self, spec: RunSpec) -> tuple[RunRecord, list[str]]:
        """Validate, snapshot, record and launch ``spec``; return at once with its record and
        what the snapshot left out (warnings). ``Run.submit(target, spec)`` gives the handle."""
        from jupyter_compute.environments import resolve
        from jupyter_compute.snapshot import (
            DEFAULT_MAX_BYTES,
            DEFAULT_MAX_CHANGED_FILES,
            take_snapshot,
        )

        self.check_ranks(spec)
        self.launcher.validate(spec)
        # Its files are read now: a missing or malformed one fails before anything is written.
        environment = resolve(spec.environment, spec.source_dir, self.workspace)
        self.host.warm_up()  # a remote host connects while the files are hashed
        snap = take_snapshot(spec.source_dir, self.workspace.dir,
                             max_bytes=spec.snapshot_max_bytes or DEFAULT_MAX_BYTES,
                             max_changed_files=spec.snapshot_max_files
                             or DEFAULT_MAX_CHANGED_FILES, extra_files=spec.extra_files,
                             store_blobs=self.host.stores_blobs)
        if spec.command is None and spec.script not in snap.files:
            raise UsageError(f"{spec.script} is excluded from the snapshot by an ignore rule "
                             f"in {spec.source_dir}; un-ignore it to run it")
        self.host.prepare()
        self.launcher.prepare(self.host)
        ctx = SubmitContext(spec, snap, self._record(spec, snap), environment)
        ctx.agent = self._agent_spec(ctx)
        ctx.record.spec = ctx.agent
        self.workspace.store.insert(ctx.record)
        secrets = secret_payload(spec)  # never in the store or spec.json: see runspec
        # Until the agent runs, this process keeps the run alive for every reader.
        with ClientBeat(self.workspace.run_dir(ctx.run_id)) as beat:
            try:
                self.launcher.sync(self.host, ctx)
                self.host.sync(ctx)
                if secrets is not None:  # 0600, read and deleted by the agent at its start
                    self.host.write(ctx.run_id, protocol.SECRETS, secrets)
                self.launcher.launch(self.host, ctx)
                beat.launched()
            except Exception as exc:
                message = str(exc) if isinstance(exc, ComputeError) else \
                    f"could not start the run on {self.name!r}: {exc}"
                if secrets is not None:  # the agent will not delete them: do it here
                    with contextlib.suppress(Exception):
                        self.host.write(ctx.run_id, protocol.SECRETS, b"")
                self._fail(ctx.run_id, message)
                if isinstance(exc, ComputeError):
                    raise
                raise TargetError(message) from exc
        # e.g. symlinks out of the folder, not followed; packages an environment left out
        notices = (ctx.agent.get("environment") or ctx.environment or {}).get("notices") or []
        return ctx.record, [*snap.warnings, *notices]

    def check_ranks(self, spec: RunSpec) -> None:
        """Refuse, in one line, a multi-node run this target cannot place."""
        if spec.ranks is None:
            return
        if self.rank_placement is None:
            raise UsageError(f"target {self.name!r} is a {self.kind} target, which runs on one "
                             "node: node_count and distribution need a local, ray or slurm "
                             "target")
        limit = self.max_nodes()
        if limit is not None and spec.node_count > limit:
            raise UsageError(f"node_count {spec.node_count} is more than target {self.name!r} "
                             f"can have (--max-nodes {limit}); ask for at most {limit} nodes, "
                             f"or attach it again with --max-nodes {spec.node_count}")

    def max_nodes(self) -> int | None:
        """The most nodes a run may ask for here; None: no limit of the target's own."""
        return None

    def status(self, run_id: str) -> dict[str, Any]:
        """The run's ``status.json``, after making sure a dead agent is noticed.

        A non-terminal run whose agent (or, before it started, whose submitting
        client) is provably gone becomes Failed, here and in the host's status file,
        so every reader agrees. A terminal status is never replaced.
        """
        st = self._read_status(run_id)
        if RunStatus(st["status"]).is_terminal():
            return self._ended(run_id, st)
        why = self._lost(run_id, st)
        if why is None:
            return st
        st = self._read_status(run_id)  # it may have ended between the two reads
        if RunStatus(st["status"]).is_terminal():
            return self._ended(run_id, st)
        now = protocol.utcnow()
        st.update(status=RunStatus.FAILED.value, ended=now, exit_code=None, error=why)
        st.setdefault("history", []).append([st["status"], now])
        self.host.write(run_id, protocol.STATUS, json.dumps(st, indent=1).encode())
        self.launcher.abandon(self.host, run_id, st)
        return self._ended(run_id, st)

    def cancel(self, run_id: str, reason: str | None = None) -> None:
        """Ask the run to stop; the agent ends it as Canceled (SIGTERM, then SIGKILL) and
        logs ``reason`` (e.g. a sweep policy's), which the cancel file carries."""
        st = self.status(run_id)
        if not RunStatus(st["status"]).is_terminal():
            self.host.write(run_id, protocol.CANCEL, (reason or "").encode())
            self.launcher.cancel(self.host, run_id, st)

    def read(self, run_id: str, name: str, offset: int = 0) -> bytes:
        """Bytes of run-folder file ``name`` from ``offset`` (what is there now)."""
        return self.host.read(run_id, name, offset)

    def write(self, run_id: str, name: str, data: bytes) -> None:
        """Replace run-folder file ``name`` on the host atomically."""
        self.host.write(run_id, name, data)

    def tail(self, run_id: str, offset: int = 0) -> bytes:
        """The run's log from byte ``offset`` on (what is there now)."""
        return self.host.read(run_id, protocol.LOG, offset)

    def outputs_dir(self, run_id: str) -> Path:
        """A local folder with the run's outputs (fetched back first where needed)."""
        return self.host.outputs_dir(run_id)

    def change_count(self, run_id: str) -> int:
        """See ``Host.change_count``: read it before reading, then ``wait_change``."""
        return self.host.change_count(run_id)

    def wait_change(self, run_id: str, since: int, timeout: float) -> None:
        """Wait for news of the run (pushed by the host) or ``timeout`` seconds."""
        self.host.wait_change(run_id, since, timeout)

    def job(self, run_id: str) -> dict[str, Any] | None:
        """The run's job in the target's own scheduler, ``{id, state}`` (``show --json``'s
        ``target_job``); None where a run is not such a job."""
        return None

    def describe(self) -> dict[str, Any]:
        """What ``targets`` shows: name, kind, options (never secrets)."""
        return {"name": self.name, "type": self.kind, **self.config}

    # -- shared pieces -----------------------------------------------------------------

    def _agent_spec(self, ctx: SubmitContext) -> dict[str, Any]:
        """``spec.json``: the run's fields, the host's paths, then the launcher's changes."""
        spec, record = ctx.spec, ctx.record
        ctx.agent = {
            "run_id": record.id, "name": record.name, "kind": spec.kind or "script",
            "script": spec.script, "command": spec.command,
            "parameters": dict(spec.parameters), "kernel": spec.kernel,
            "arguments": list(spec.arguments), "interpreter": spec.python,
            "environment": ctx.environment,  # built or reused on the target by envbuild
            # Secret values stay out (`***`); see runspec.secret_payload for their way.
            "environment_variables": masked_environment(spec),
            "secret_env": secret_names(spec),
            "max_run_duration_seconds": spec.max_run_duration_seconds,
            "cancel_grace_seconds": spec.cancel_grace_seconds,
            **self.host.paths(ctx),
        }
        if spec.ranks is not None:  # the agent starts the ranks' launcher (ranks.py)
            ctx.agent["ranks"] = {**spec.ranks, "placement": self.rank_placement}
        self.launcher.agent_spec(self.host, ctx)
        return ctx.agent

    def _lost(self, run_id: str, st: dict[str, Any]) -> str | None:
        """Why the run's agent is provably gone, or None while it may still be going."""
        verdict = self.launcher.alive(self.host, run_id, st)
        if verdict is True:
            return None
        ident = st.get("agent")
        # An agent in a container says so in its identity: the host cannot check its pid.
        alive = self.host.process_alive(ident) if ident and verdict is None else verdict
        if alive:
            return None  # the common case on every poll: no more files to read
        beat = self.host.heartbeat_age(run_id) if ident and alive is None else None
        # The submitting client matters only until the agent has started.
        client = None if ident else client_state(self.workspace.run_dir(run_id))
        return lost(st, agent_alive=alive, heartbeat_age=beat, client=client)

    def _ended(self, run_id: str, st: dict[str, Any]) -> dict[str, Any]:
        self.host.finish(run_id)
        return self.launcher.ended(self.host, run_id, st)

    def _read_status(self, run_id: str) -> dict[str, Any]:
        raw = self.host.read(run_id, protocol.STATUS)
        try:
            st = json.loads(raw) if raw else None
        except ValueError:
            st = None
        return st or {"status": RunStatus.QUEUED.value}

    def _record(self, spec: RunSpec, snap: Snapshot) -> RunRecord:
        """Create the run's local folder (Queued) and its record, not yet stored."""
        from jupyter_compute.runids import new_run_folder
        from jupyter_compute.store import RunRecord

        name = spec.display_name
        run_id = new_run_folder(self.workspace.runs_dir, name)
        created = protocol.utcnow()
        protocol.write_json_atomic(str(self.workspace.run_dir(run_id) / protocol.STATUS), {
            "run_id": run_id, "status": RunStatus.QUEUED.value, "created": created,
            "history": [[RunStatus.QUEUED.value, created]]})
        return RunRecord(
            id=run_id, name=name, target=self.name, kind=spec.kind or "script",
            status=RunStatus.QUEUED.value, created=created, script=spec.script,
            arguments=list(spec.arguments), source_dir=str(spec.source_dir),
            snapshot={"id": snap.id, **vars(snap.stats)},
            git=snap.git.to_dict() if snap.git else None, parent_id=spec.parent_id)

    def _fail(self, run_id: str, message: str) -> None:
        now = protocol.utcnow()
        path = self.workspace.run_dir(run_id) / protocol.STATUS
        st = protocol.read_json(str(path)) or {}
        if st.get("status") in protocol.TERMINAL_STATUSES:
            return
        st.update(status=RunStatus.FAILED.value, ended=now, error=message)
        st.setdefault("history", []).append([RunStatus.FAILED.value, now])
        protocol.write_json_atomic(str(path), st)
        self.workspace.store.update(run_id, status=RunStatus.FAILED.value, ended=now,
                                    error=message)


class Cluster(ABC):
    """A capability of kinds whose compute scales (Ray): start, stop, count nodes."""

    @abstractmethod
    def start(self) -> None:
        """Start what the target runs on (a cluster's head)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop what ``start`` started (runs on it end)."""

    @abstractmethod
    def nodes(self) -> dict[str, int] | None:
        """Node counts ``{current, min, max, pending}``."""
