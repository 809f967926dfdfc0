"""The agent: what runs ON the target and owns one run from start to end.

::

    python -m jupyter_compute.agent RUN_DIR      # or: python agent.py RUN_DIR

It reads ``spec.json`` from the run folder, materializes the snapshot into
``workdir/``, prepares the interpreter (builds or reuses the run's environment:
``envbuild.py``; that time is preparation, recorded as ``prepare_seconds``), runs
``python -u script args`` (a list, never a shell) — or, for a command run, the
command line through ``bash -c`` with that interpreter first on ``PATH`` — in a
process group of its own,
appends stdout and stderr to ``output.log``, enforces the run's maximum duration,
obeys ``cancel`` and writes every status transition to ``status.json`` (a multi-node
run's child is its ranks' launcher instead, ``ranks.py``: the run is Running once every
rank has started, and its error names the rank that failed). It is
detached from the client, so the client (a kernel, a CLI, an SSH session) may go
away at any time.

Status only moves forward: before each write the agent reads ``status.json``
again, and if a reader has already ended the run there (declared it lost, say),
the agent stops the script at once and leaves that status as it is.

The agent is a child subreaper (Linux): whatever the script starts, even a
``setsid`` daemon that clears its environment, stays its descendant, and the
whole tree ends with the run (SIGTERM, then SIGKILL after the grace).

Secret environment values never enter ``spec.json``: they arrive in the 0600
``secrets`` file, which the agent reads and deletes before anything else.

Standard library only: this file travels to every target with ``protocol.py``,
``envbuild.py`` and ``tracking.py``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time

if __package__ in (None, ""):  # run as a plain file: python /path/to/agent.py RUN_DIR
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jupyter_compute import protocol  # noqa: E402
from jupyter_compute.protocol import RunStatus  # noqa: E402

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import Any

POLL_SECONDS = 0.05
#: How long SIGKILLed processes may take to go before the agent stops waiting for them.
KILL_WAIT_SECONDS = 5.0
ERROR_TAIL_LINES = 20


class Agent:
    """Runs one run folder to a terminal status; see the module docstring."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = os.path.abspath(run_dir)
        self.spec: dict[str, Any] = protocol.read_json(self._p(protocol.SPEC)) or {}
        self.status: dict[str, Any] = protocol.read_json(self._p(protocol.STATUS)) or {}
        self.log_fd = os.open(self._p(protocol.LOG), os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                              0o600)
        self.stderr_tail: collections.deque[bytes] = collections.deque(maxlen=ERROR_TAIL_LINES)
        self.stop = threading.Event()  # cancel requested (file or SIGTERM)
        self.wake = threading.Event()  # the script exited, or stop was set
        self.child: subprocess.Popen[bytes] | None = None
        self.secrets: dict[str, str] = {}
        #: The terminal status a reader wrote while we ran (None while the run is ours).
        self.ended_elsewhere: str | None = None
        self._status_stamp: tuple[int, int] | None = None  # status.json after our write
        self.lease: Any = None  # envbuild.Lease: the environment this run uses, if built
        self.environment_record: dict[str, Any] | None = None
        self.prepare_seconds: float | None = None  # snapshot + environment, not run time
        self.mlflow: Any = None  # mlflow_endpoint.Endpoint the script logs to, while it runs
        self.path_first: list[str] = []  # folders put first on PATH (a command's python)
        self.command_env: dict[str, str] = {}  # what a command builder adds to the env

    def _p(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    # -- status and log ------------------------------------------------------------

    def set_status(self, status: RunStatus, **fields: Any) -> bool:
        """Record a transition in ``status.json`` if it moves the run forward.

        The file is read again first: when a reader has already ended the run there
        (``agent lost``, a cancel from a host that lost us), it is left as it is,
        ``ended_elsewhere`` is set, and False returned — the caller stops.
        """
        path = self._p(protocol.STATUS)
        try:
            current = protocol.read_json(path)
        except ValueError:  # torn or foreign: ours is the copy to keep
            current = None
        if isinstance(current, dict):
            self.status = current
        if not protocol.advances(self.status.get("status"), status.value):
            if self.status.get("status") in protocol.TERMINAL_STATUSES:
                self.ended_elsewhere = self.status["status"]
                self.wake.set()
            return False
        now = protocol.utcnow()
        self.status.pop("detail", None)  # what it was doing while in the previous status
        self.status.update(fields, status=status.value, updated=now)
        self.status.setdefault("history", []).append([status.value, now])
        protocol.write_json_atomic(path, self.status)
        self._status_stamp = _mtime(path)
        return True

    def set_detail(self, text: str) -> None:
        """What the run is doing within its status (``environment: 12/40 packages``), in
        ``status.json``'s ``detail``: the widget shows it beside the status."""
        path = self._p(protocol.STATUS)
        try:
            current = protocol.read_json(path)
        except ValueError:
            current = None
        if isinstance(current, dict):
            self.status = current
        if self.status.get("status") in protocol.TERMINAL_STATUSES:
            return  # ended by a reader: not ours to write any more
        self.status["detail"] = text
        protocol.write_json_atomic(path, self.status)
        self._status_stamp = _mtime(path)

    def _check_ended_elsewhere(self) -> bool:
        """Whether a reader has ended the run in ``status.json`` since our last write."""
        if self.ended_elsewhere is not None:
            return True
        path = self._p(protocol.STATUS)
        if _mtime(path) == self._status_stamp:
            return False  # untouched since we wrote it: the cheap, common case
        try:
            current = protocol.read_json(path) or {}
        except ValueError:
            return False
        if current.get("status") in protocol.TERMINAL_STATUSES:
            self.ended_elsewhere = current["status"]
            return True
        return False

    def _stopped_by_reader(self) -> RunStatus:
        """End everything the script started, leaving the reader's status in place."""
        assert self.ended_elsewhere is not None
        self.say(f"the run was already ended ({self.ended_elsewhere}) by another reader; "
                 "stopping without overwriting it")
        self.end_processes(self.child.pid if self.child else None)
        return RunStatus(self.ended_elsewhere)

    def say(self, message: str) -> None:
        """An agent line in the run's log, where the user looks."""
        os.write(self.log_fd, f"[agent] {message}\n".encode())

    # -- the run ---------------------------------------------------------------------

    def run(self) -> RunStatus:
        self.secrets = self.take_secrets()  # first: the file must not outlive our start
        try:
            os.chmod(self.run_dir, 0o700)
        except OSError:
            pass
        self.set_status(RunStatus.PREPARING, agent=protocol.process_identity(
            os.getpid(), container=bool(self.spec.get("container"))))
        if self.ended_elsewhere is not None:  # canceled or declared lost before we started
            self.say(f"the run has already ended ({self.ended_elsewhere}); nothing to do")
            return RunStatus(self.ended_elsewhere)
        become_subreaper()
        threading.Thread(target=self._heartbeat, daemon=True).start()
        preparing = time.monotonic()
        try:
            workdir = self.materialize()
            python = self.interpreter()
            argv = self.command(python)
            self.path_first = self.python_on_path(python)
        except Exception as exc:  # noqa: BLE001 - any preparation failure ends the run
            from jupyter_compute.envbuild import BuildError

            if self._cancel_requested() and isinstance(exc, BuildError):
                self.say(str(exc))
                self.set_status(RunStatus.CANCELED, ended=protocol.utcnow(), error=str(exc))
                return RunStatus.CANCELED
            why = f"environment: {exc}" if isinstance(exc, BuildError) else \
                f"preparation failed: {exc}"
            self.say(why)
            self.set_status(RunStatus.FAILED, ended=protocol.utcnow(), exit_code=None,
                            error=why, prepare_seconds=round(time.monotonic() - preparing, 3))
            return RunStatus.FAILED
        self.prepare_seconds = round(time.monotonic() - preparing, 3)
        if self._check_ended_elsewhere():
            return self._stopped_by_reader()
        if self._cancel_requested():
            self.set_status(RunStatus.CANCELED, ended=protocol.utcnow(),
                            error="canceled before it started")
            return RunStatus.CANCELED
        return self.execute(argv, workdir)

    def execute(self, argv: list[str], workdir: str) -> RunStatus:
        env = self.environment()
        try:
            # A session of its own: killpg reaches the script and all it starts.
            self.child = subprocess.Popen(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                          stdout=self.log_fd, stderr=subprocess.PIPE,
                                          start_new_session=True)
        except OSError as exc:
            self.say(f"could not start {argv[0]}: {exc}")
            self.set_status(RunStatus.FAILED, ended=protocol.utcnow(),
                            error=f"could not start {argv[0]}: {exc.strerror or exc}")
            return RunStatus.FAILED
        pump = threading.Thread(target=self._pump_stderr, daemon=True)
        pump.start()
        threading.Thread(target=lambda: (self.child.wait(), self.wake.set()),  # type: ignore
                         daemon=True).start()
        extra: dict[str, Any] = {"prepare_seconds": self.prepare_seconds}
        if self.environment_record is not None:
            extra["environment"] = self.environment_record
        placed = True
        if self.spec.get("ranks"):  # Running once every rank has started on its node
            extra["ranks"] = self._await_ranks()
            placed = extra["ranks"] is not None  # else it ends from Preparing (canceled…)
        if placed and not self.set_status(
                RunStatus.RUNNING, started=protocol.utcnow(),
                script=protocol.process_identity(self.child.pid), **extra) \
                and self.ended_elsewhere is not None:
            return self._stopped_by_reader()

        ended_by = self._supervise()
        if self.ended_elsewhere is not None:
            return self._stopped_by_reader()
        returncode = self.child.wait()
        # Leftovers first: one that escaped the group may hold stderr open, and the
        # pump would wait for it (5 s) before a cancel could finish.
        leftovers = self.end_processes(self.child.pid)
        pump.join(timeout=5)
        if self.lease is not None:  # nothing of the run uses its environment any more
            self.lease.release()
        if leftovers:
            self.say(f"ended {leftovers} leftover process{'es' if leftovers > 1 else ''} "
                     "the script left behind")
        self.collect_outputs(workdir)
        if self._stopped_by_slurm():
            self.say("stopped by Slurm (requeued, preempted or at its time limit): the "
                     "job's state says how the run ends")
            return RunStatus.FAILED  # the status is left for the launcher (slurm/)
        exit_code = returncode if returncode >= 0 else 128 - returncode
        ended = protocol.utcnow()
        if ended_by is not None:
            status, why = ended_by
            self.say(why)
            self.set_status(status, ended=ended, exit_code=exit_code, error=why)
            return status
        if returncode == 0:
            self.set_status(RunStatus.COMPLETED, ended=ended, exit_code=0, error=None)
            return RunStatus.COMPLETED
        tail = b"".join(self.stderr_tail).decode(errors="replace").rstrip()
        if self.spec.get("ranks"):
            from jupyter_compute import ranks

            tail = ranks.failure_message(self.run_dir, tail) or tail
        if returncode < 0:
            tail = (tail + "\n" if tail else "") + f"killed by {signal.Signals(-returncode).name}"
        self.set_status(RunStatus.FAILED, ended=ended, exit_code=exit_code,
                        error=tail or f"exited with code {exit_code}")
        return RunStatus.FAILED

    def _supervise(self) -> tuple[RunStatus, str] | None:
        """Wait for the script; stop it on cancel or timeout and say why."""
        assert self.child is not None
        limit = self.spec.get("max_run_duration_seconds")
        deadline = time.monotonic() + float(limit) if limit else None
        while self.child.poll() is None:
            if self._check_ended_elsewhere():
                return None  # the caller stops everything and leaves the status alone
            if self._cancel_requested():
                self.end_processes(self.child.pid)
                return RunStatus.CANCELED, self._cancel_reason() or "canceled by request"
            if deadline is not None and time.monotonic() >= deadline:
                self.end_processes(self.child.pid)
                return RunStatus.TIMED_OUT, f"exceeded max_run_duration_seconds={limit}"
            self.wake.wait(POLL_SECONDS)  # wakes at once when the script exits
        # The cancel's own signal can end the script before this loop sees the request
        # (Slurm's scancel signals every process of the job at once): canceled, not failed.
        if self.child.returncode != 0 and self._cancel_requested():
            return RunStatus.CANCELED, self._cancel_reason() or "canceled by request"
        return None

    def _await_ranks(self) -> list[dict[str, Any]] | None:
        """Relay the group launcher's ``ranks.json`` (``ranks.py``) while the run waits for
        its nodes; the ranks once all have started, None if the launcher ended first."""
        assert self.child is not None
        path, said = self._p(protocol.RANKS), None
        while self.child.poll() is None and not self._cancel_requested() \
                and not self._check_ended_elsewhere():
            try:
                found = protocol.read_json(path) or {}
            except ValueError:
                found = {}
            if found.get("ranks"):
                return list(found["ranks"])
            if found.get("waiting") and found["waiting"] != said:
                said = found["waiting"]
                self.set_detail(said)
            self.wake.wait(POLL_SECONDS)
        return None
    def _stopped_by_slurm(self) -> bool:
        """A SIGTERM nobody asked for, in a Slurm job: Slurm requeues, preempts or times out
        the job, and its state (which may start the run again) decides the run's end."""
        return bool(os.environ.get(SLURM_JOB_ENV)) and self.stop.is_set() and \
            not os.path.exists(self._p(protocol.CANCEL))

    def _cancel_requested(self) -> bool:
        return self.stop.is_set() or os.path.exists(self._p(protocol.CANCEL))

    def _cancel_reason(self) -> str:
        """Why the run was canceled, as the canceler wrote it (a sweep policy's reason)."""
        try:
            with open(self._p(protocol.CANCEL), "rb") as f:
                return f.read(2000).decode(errors="replace").strip()
        except OSError:
            return ""

    def end_processes(self, pgid: int | None) -> int:
        """End every process of the run: SIGTERM, then SIGKILL what is left after the grace.

        The run's processes are this agent's descendants (it is a subreaper, so even
        a ``setsid`` daemon whose parent died is one), the script's process group, and
        any that carry this run's id in their environment (where there is no subreaper).
        Returns how many there were, not counting the script itself.
        """
        script = self.child.pid if self.child else None
        grace = float(self.spec.get("cancel_grace_seconds", 3))
        signaled: set[int] = set()
        kill_at = time.monotonic() + grace
        give_up_at = kill_at + KILL_WAIT_SECONDS
        warned = False
        while live := self._run_processes(pgid):
            now = time.monotonic()
            if now >= give_up_at:  # stuck in the kernel (D state), or not ours to kill
                self.say(f"process{'es' if len(live) > 1 else ''} "
                         f"{', '.join(map(str, live))} did not end after SIGKILL")
                break
            killing = now >= kill_at
            if killing and not warned:
                warned = True
                self.say(f"still running {grace:g}s after SIGTERM; sending SIGKILL")
            for pid in live:
                if killing or pid not in signaled:
                    _kill(pid, signal.SIGKILL if killing else signal.SIGTERM)
            signaled.update(live)
            time.sleep(0.01 if killing else POLL_SECONDS)
        signaled.discard(script)  # type: ignore[arg-type]
        return len(signaled)

    def _run_processes(self, pgid: int | None) -> list[int]:
        """The run's live processes now; zombies that are our children are reaped."""
        live, zombies = _run_processes(pgid, self.spec.get("run_id", ""))
        script = self.child.pid if self.child else None
        for pid in zombies:
            if pid != script:  # the script is Popen's to reap, or it loses its exit code
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        return live

    # -- preparation -------------------------------------------------------------------

    def materialize(self) -> str:
        """Copy the manifest's files out of the blob store into ``workdir/``."""
        manifest = protocol.read_json(self._p(self.spec.get("manifest", protocol.MANIFEST)))
        if manifest is None:
            raise RuntimeError("the snapshot's manifest is missing from the run folder")
        blobs = os.path.join(self.run_dir, self.spec.get("blobs", "blobs"))
        workdir = self._p(protocol.WORKDIR)
        os.makedirs(workdir, exist_ok=True)
        materialize(manifest["files"], blobs, workdir)
        outputs = self._p(protocol.OUTPUTS)
        os.makedirs(outputs, exist_ok=True)
        link = os.path.join(workdir, protocol.OUTPUTS)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..", protocol.OUTPUTS), link)
        return workdir

    def interpreter(self) -> str:
        """The Python that runs the script: the run's environment (built or reused on this
        host by ``envbuild``), else the given interpreter, else ours."""
        python = self.spec.get("interpreter") or sys.executable
        env = self.spec.get("environment")
        if not env:
            return python
        from jupyter_compute import envbuild  # the runtime ships it beside this file

        got = envbuild.prepare(
            env, default_python=python,
            env_root=self.spec.get("env_root") or self._p("envs"),
            blobs=os.path.join(self.run_dir, self.spec.get("blobs", "blobs")),
            cwd=self._p(protocol.WORKDIR), say=self.say, log_fd=self.log_fd,
            stopped=self._cancel_requested, progress=self.set_detail)
        if isinstance(got, str):
            return got
        self.lease = got  # held (a shared lock) while the run uses the environment
        self.environment_record = {"key": got.key, "reused": got.reused,
                                   "installer": got.installer, "path": got.env_dir}
        return got.python

    def command(self, python: str) -> list[str]:
        """What runs: the script with its arguments, papermill on the notebook, or the
        command line through ``bash -c`` (``sh`` where a host has no bash) — started
        once per rank by the ranks' launcher for a multi-node run."""
        argv = self._argv(python)
        ranks = self.spec.get("ranks")
        if ranks:
            from jupyter_compute.ranks import group_command

            return group_command(self.run_dir, ranks.get("placement", "local"), argv)
        return argv

    def _argv(self, python: str) -> list[str]:
        if self.spec.get("command") is not None:
            import shutil

            return [shutil.which("bash") or "sh", "-c", str(self.spec["command"])]
        if self.spec.get("kind") == "notebook":
            params = self._p("parameters.json")
            protocol.write_json_atomic(params, self.spec.get("parameters") or {})
            argv = [python, "-u", "-m", "jupyter_compute.notebook_runner", self.spec["script"],
                    "--parameters", params]
            if self.spec.get("kernel"):
                argv += ["--kernel", self.spec["kernel"]]
            return argv
        builder = str(self.spec.get("command_builder") or "")
        if builder.isidentifier():
            # A launcher's run-side module builds the command (sparksubmit: spark-submit's).
            import importlib

            module = importlib.import_module(f"jupyter_compute.{builder}")
            argv, self.command_env = module.command(self.spec, python, self._p(protocol.WORKDIR))
            return list(argv)
        return [python, "-u", self.spec["script"], *map(str, self.spec.get("arguments", []))]

    def python_on_path(self, python: str) -> list[str]:
        """The folders to put first on a command's PATH so that its ``python`` (and
        ``python3``) is ``python``: the interpreter's own folder, and before it a folder
        of shims where that folder's ``python`` is another program (``/usr/bin`` with
        only ``python3``). A shim execs the interpreter by its path (a symlink would
        lose a venv: Python finds ``pyvenv.cfg`` beside the name it was started by)."""
        if self.spec.get("command") is None:
            return []
        import shlex
        import shutil

        python = shutil.which(python) or python
        folder = os.path.dirname(os.path.abspath(python))
        first = [folder]
        real = os.path.realpath(python)
        if any(os.path.realpath(os.path.join(folder, n)) != real for n in ("python", "python3")):
            shims = self._p("bin")
            os.makedirs(shims, mode=0o700, exist_ok=True)
            for name in ("python", "python3"):
                path = os.path.join(shims, name)
                with open(path, "w") as f:
                    f.write(f"#!/bin/sh\nexec {shlex.quote(os.path.abspath(python))} \"$@\"\n")
                os.chmod(path, 0o700)
            first.insert(0, shims)
        return first

    def take_secrets(self) -> dict[str, str]:
        """Read the ``secrets`` file (secret environment values) and delete it at once."""
        path = self._p(protocol.SECRETS)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return {}
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        try:
            values = json.loads(raw)
        except ValueError:
            self.say("the secrets file is not JSON; the secret variables are unset")
            return {}
        return {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else {}

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        secret = set(self.spec.get("secret_env") or ())
        env.update({str(k): str(v) for k, v in (self.spec.get("environment_variables") or {})
                    .items() if k not in secret})
        missing = sorted(secret - set(self.secrets))
        if missing:
            self.say(f"secret variable{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                     "did not reach this target; unset")
        env.update(self.secrets)
        env[protocol.ENV_RUN_ID] = self.spec["run_id"]
        env[protocol.ENV_RUN_DIR] = self.run_dir
        if not env.get("MLFLOW_TRACKING_URI"):  # a script's own tracking server wins
            from jupyter_compute import mlflow_endpoint

            self.mlflow, variables = mlflow_endpoint.serve(
                self.run_dir, self.spec["run_id"], self.spec.get("name") or self.spec["run_id"],
                env, self.say)
            env.update(variables)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.command_env)
        if self.path_first:
            env["PATH"] = os.pathsep.join([*self.path_first, env.get("PATH") or os.defpath])
        extra = [os.path.join(self.run_dir, p) for p in self.spec.get("pythonpath", [])]
        if extra:
            env["PYTHONPATH"] = os.pathsep.join(extra + [env.get("PYTHONPATH", "")]).rstrip(
                os.pathsep)
        return env

    def stop_mlflow(self) -> None:
        """Stop the run's MLflow endpoint (its records are already in the run folder)."""
        if self.mlflow is not None:
            self.mlflow.stop()
            self.mlflow = None

    def collect_outputs(self, workdir: str) -> None:
        """If the script replaced the ``outputs`` link with a folder, keep its files."""
        local = os.path.join(workdir, protocol.OUTPUTS)
        if os.path.isdir(local) and not os.path.islink(local):
            import shutil

            dest = self._p(protocol.OUTPUTS)
            for name in os.listdir(local):
                shutil.move(os.path.join(local, name), os.path.join(dest, name))

    # -- threads -----------------------------------------------------------------------

    def _pump_stderr(self) -> None:
        assert self.child is not None and self.child.stderr is not None
        fd = self.child.stderr.fileno()
        partial = b""
        while chunk := os.read(fd, 65536):
            os.write(self.log_fd, chunk)
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            self.stderr_tail.extend(line + b"\n" for line in lines)
        if partial:
            self.stderr_tail.append(partial)

    def _heartbeat(self) -> None:
        path = self._p(protocol.HEARTBEAT)
        while True:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            os.utime(path)
            time.sleep(protocol.HEARTBEAT_SECONDS)


def materialize(files: Mapping[str, Sequence[Any]], blobs: str, dest: str,
                place: Callable[[str, str, int], None] | None = None) -> None:
    """Write ``files`` (path → [sha256, size, mode]) from the store ``blobs`` into ``dest``.

    ``place(blob, target, mode)`` puts one file (default: copy it and set its mode;
    the docker target hard-links instead). The manifest may be hostile, so nothing
    can land, be deleted or be read outside ``dest`` and ``blobs``:

    * a digest is 64 lowercase hex digits (never ``../x``);
    * a path is relative and normalized: no ``/`` at either end, no ``//``, ``.``
      or ``..`` part, no backslash;
    * nothing is written through a symlink: each target's folder must resolve to
      itself inside ``dest``, and the default copy opens with ``O_NOFOLLOW``;
    * symlinks are made last, then each is resolved (its whole chain followed, not
      its text compared) and must pass :func:`protocol.link_problem`, as the
      snapshot checked.
    """
    place = place or _copy
    root = os.path.realpath(dest)
    entries = []
    for rel, entry in files.items():
        digest, _size, mode = entry
        if not (isinstance(digest, str) and _is_digest(digest)):
            raise ValueError(f"refusing {rel!r} in the snapshot: its digest {str(digest)[:80]!r} "
                             "is not a sha256")
        if not isinstance(mode, int) or isinstance(mode, bool):
            raise ValueError(f"refusing {rel!r} in the snapshot: its mode {mode!r} is not a number")
        entries.append((rel, _safe_join(root, rel), digest, mode))
    links = []
    made: set[str] = set()
    for rel, target, digest, mode in entries:
        if stat.S_ISLNK(mode):
            links.append((rel, target, digest))
            continue
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            _check_parent(root, parent, rel)
            made.add(parent)
        if os.path.islink(target) or os.path.isfile(target):
            os.unlink(target)  # from an earlier try: replaced, never written through
        place(_blob(blobs, digest), target, mode & 0o777)
    for rel, target, digest in links:
        with open(_blob(blobs, digest), encoding="utf-8") as f:
            pointee = f.read()
        if not pointee or os.path.isabs(pointee) or "\0" in pointee:
            raise ValueError(f"refusing symlink {rel} -> {pointee}: it points outside the run")
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        _check_parent(root, parent, rel)  # links made so far must not redirect this one
        if os.path.lexists(target):
            if os.path.isdir(target) and not os.path.islink(target):
                raise ValueError(f"refusing symlink {rel}: a folder of the snapshot is there")
            os.unlink(target)  # the entry itself, in a checked folder: never followed
        os.symlink(pointee, target)
    # Resolved only now that all exist: a link's meaning depends on links made after it.
    for rel, target, _digest in links:
        problem = protocol.link_problem(target, root, "the run's workdir")
        if problem is not None:
            raise ValueError(f"refusing symlink {rel} -> {os.readlink(target)}: {problem}")


def _is_digest(digest: str) -> bool:
    """64 lowercase hex digits (strip() runs in C: this is on the path of every file)."""
    return len(digest) == 64 and not digest.strip("0123456789abcdef")


def _check_parent(root: str, parent: str, rel: str) -> None:
    """``parent`` (a folder under ``root``) must be itself: no symlink on the way to it."""
    if os.path.realpath(parent) != parent:
        raise ValueError(f"refusing {rel!r} in the snapshot: a folder on its path is a symlink")


def _blob(blobs: str, digest: str) -> str:
    return os.path.join(blobs, "sha256", digest[:2], digest)


def _copy(blob: str, target: str, mode: int) -> None:
    src = os.open(blob, os.O_RDONLY)
    try:
        # a new file only: whatever appeared at ``target`` meanwhile (a link) is refused
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        try:
            while chunk := os.read(src, 1024 * 1024):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view):]
            os.fchmod(dst, mode)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _safe_join(root: str, rel: str) -> str:
    if not isinstance(rel, str):
        raise ValueError(f"refusing path {rel!r} in the snapshot: not a path")
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or "\0" in rel or any(p in ("", ".", "..")
                                                                for p in parts):
        raise ValueError(f"refusing path {rel!r} in the snapshot: it would leave the run folder")
    return os.path.join(root, *parts)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _mtime(path: str) -> tuple[int, int] | None:
    """What changes when anyone replaces or rewrites ``path``: its inode and mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


#: prctl(2) option: orphaned descendants are re-parented to this process, not to init.
PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Make this process a child subreaper (Linux), so no descendant can leave its tree."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _run_processes(pgid: int | None, run_id: str) -> tuple[list[int], list[int]]:
    """The run's processes: ``(live, zombie children of ours)``.

    A process belongs to the run if it descends from this agent (walking the ppid
    links in /proc), is in group ``pgid``, or carries ``run_id`` in its environment.
    """
    marker = f"{protocol.ENV_RUN_ID}={run_id}\0".encode()
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:  # no /proc (macOS): the process group is all we can reach
        if pgid is None:
            return [], []
        try:
            os.killpg(pgid, 0)
            return [-pgid], []
        except OSError:
            return [], []
    table: dict[int, tuple[bytes, int, int]] = {}  # pid -> (state, ppid, pgid)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                raw = f.read()
            fields = raw[raw.rindex(b")") + 2:].split()
            table[pid] = (fields[0], int(fields[1]), int(fields[2]))
        except (OSError, ValueError, IndexError):
            continue
    children: dict[int, list[int]] = {}
    for pid, (_state, ppid, _pgid) in table.items():
        children.setdefault(ppid, []).append(pid)
    ours: set[int] = set()
    todo = [me]
    while todo:
        for kid in children.get(todo.pop(), ()):
            if kid not in ours:
                ours.add(kid)
                todo.append(kid)
    live, zombies = [], []
    for pid, (state, ppid, group) in table.items():
        if pid == me:
            continue
        if state == b"Z":
            if ppid == me:
                zombies.append(pid)
            continue
        if pid in ours or group == pgid:
            live.append(pid)
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read():
                    live.append(pid)
        except OSError:
            continue
    return live, zombies


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m jupyter_compute.agent RUN_DIR``; ends the process once
    the run has ended. Every record of the run is an unbuffered write, so nothing is
    left for the interpreter's teardown (~5 ms) but delay: a batch scheduler starts its
    next job (a sweep's next array task) only when this process is gone."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m jupyter_compute.agent RUN_DIR", file=sys.stderr)
        return 2
    code = run_agent(args[0])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


#: Set by the slurm target's batch script: this agent is a Slurm job's (see _stopped_by_slurm).
SLURM_JOB_ENV = "JUPYTER_COMPUTE_SLURM_JOB"


def run_agent(run_dir: str) -> int:
    """Run the agent for ``run_dir`` in this process; 0 if the run Completed."""
    agent = Agent(run_dir)

    def on_sigterm(*_: Any) -> None:  # a local cancel: stop now, not at the next poll
        agent.stop.set()
        agent.wake.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the SSH session may drop
    try:
        # The MLflow endpoint is left to the process's exit: stopping it waits out its
        # poll, which would keep the agent alive after the final status for nothing (its
        # records are unbuffered writes, and the script, its only client, has exited).
        final = agent.run()
    except BaseException as exc:  # the run must never stay Running: record why it died
        import traceback

        agent.say(f"agent crashed: {exc!r}\n{traceback.format_exc()}")
        agent.stop_mlflow()
        for pid in _run_processes(agent.child.pid if agent.child else None,
                                  agent.spec.get("run_id", ""))[0]:
            _kill(pid, signal.SIGKILL)
        agent.set_status(RunStatus.FAILED, ended=protocol.utcnow(), error=f"agent crashed: {exc!r}")
        return 1
    return 0 if final is RunStatus.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
