"""The ``local`` target: the agent runs as a detached process on this machine.

The run folder on the target *is* the workspace's run folder and the blob store
is the workspace's own, so ``sync`` only writes the agent's spec. The agent is
started in a session of its own, so closing the kernel or the shell does not
stop the run.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import UsageError
from jupyter_compute.targets.base import HostFolderTarget, runtime_digest, runtime_files

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    import subprocess
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.snapshot import Snapshot
    from jupyter_compute.store import RunRecord

#: Agents started with Popen (from a threaded process), kept so they are reaped.
_children: list[subprocess.Popen[bytes]] = []


class LocalTarget(HostFolderTarget):
    """Runs on this machine, with the current interpreter unless ``python`` is given."""

    kind = "local"
    options = {"python": (str, "interpreter for runs (default: the current one)")}

    def validate(self, spec: RunSpec) -> None:
        if spec.docker_image:
            raise UsageError("the local target does not run docker images; attach a docker "
                             "target (jupyter-compute attach NAME --type docker) and use it")

    def agent_spec(self, record: RunRecord, spec: RunSpec, snap: Snapshot) -> dict[str, Any]:
        run_dir = self.workspace.run_dir(record.id)
        agent = self.base_agent_spec(record, spec)
        python = spec.python or self.config.get("python")
        agent.update(
            interpreter=python,
            manifest=os.path.relpath(snap.manifest_path, run_dir),
            blobs=os.path.relpath(self.workspace.blobs_dir, run_dir),
            env_root=os.path.relpath(self.workspace.dir / "envs", run_dir),
        )
        if python and os.path.realpath(python) != os.path.realpath(sys.executable):
            # Another interpreter may not have jupyter_compute: give it the runtime.
            agent["pythonpath"] = [os.path.relpath(self._runtime(), run_dir)]
        return agent

    def sync(self, run_id: str, snap: Snapshot, agent_spec: dict[str, Any]) -> None:
        protocol.write_json_atomic(str(self.workspace.run_dir(run_id) / protocol.SPEC),
                                   agent_spec)

    def deliver_secrets(self, run_id: str, payload: bytes) -> None:
        path = self.workspace.run_dir(run_id) / protocol.SECRETS
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as f:
            f.write(payload)

    def launch(self, run_id: str) -> None:
        run_dir = str(self.workspace.run_dir(run_id))
        if hasattr(os, "fork") and threading.active_count() == 1:
            _fork_agent(run_dir)  # saves starting an interpreter (~35 ms) on the CLI path
            return
        # Forking a threaded process (a kernel) is unsafe: start a fresh interpreter.
        import subprocess

        _children[:] = [p for p in _children if p.poll() is None]
        _children.append(subprocess.Popen(
            [sys.executable, "-m", "jupyter_compute.agent", run_dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True))

    def alive(self, run_id: str, status: dict[str, Any]) -> bool:
        ident = status.get("agent")
        if not ident:  # Queued: the agent has not started (yet)
            return _age(status.get("created")) < protocol.START_TIMEOUT
        known = protocol.process_alive(ident)
        if known is not None:
            return known
        beat = self.workspace.run_dir(run_id) / protocol.HEARTBEAT
        try:
            return _age_seconds(beat.stat().st_mtime) < protocol.HEARTBEAT_TIMEOUT
        except FileNotFoundError:
            return _age(status.get("updated")) < protocol.HEARTBEAT_TIMEOUT

    def request_cancel(self, run_id: str) -> None:
        run_dir = self.workspace.run_dir(run_id)
        (run_dir / protocol.CANCEL).touch()
        ident = self._read_status(run_id).get("agent")
        if ident and protocol.process_alive(ident):  # wake it now rather than at its next poll
            try:
                os.kill(ident["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass

    def abandon(self, run_id: str, status: dict[str, Any]) -> None:
        script = status.get("script")
        if script and protocol.process_alive(script):
            try:
                os.killpg(script["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _runtime(self) -> Path:
        """The run-side runtime, written once per version into the workspace."""
        folder = self.workspace.dir / "runtime" / runtime_digest()
        package = folder / "jupyter_compute"
        if not (package / "__init__.py").exists():
            package.mkdir(parents=True, exist_ok=True)
            for name, data in sorted(runtime_files().items(), key=lambda kv: kv[0] ==
                                     "__init__.py"):  # __init__ last: it marks completion
                tmp = package / f".{name}.{os.getpid()}"
                tmp.write_bytes(data)
                os.replace(tmp, package / name)
        return folder


_forked: list[int] = []


def _fork_agent(run_dir: str) -> None:
    """Run the agent in a forked child of this process, in a session of its own."""
    for pid in list(_forked):  # reap agents forked earlier that have ended
        if os.waitpid(pid, os.WNOHANG)[0]:
            _forked.remove(pid)
    pid = os.fork()
    if pid:
        _forked.append(pid)
        return
    code = 1
    try:
        # The parent's objects (its SQLite connection, files) must never be finalized
        # here: that would touch fds this process closes and reuses below.
        gc.freeze()
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # never hold the caller's pipes open
            os.dup2(devnull, fd)
        os.closerange(3, devnull)
        os.closerange(devnull + 1, 1024)
        from jupyter_compute.agent import run_agent

        code = run_agent(run_dir)
    finally:
        os._exit(code)


def _age(iso: str | None) -> float:
    if not iso:
        return 0.0
    from datetime import datetime

    return _age_seconds(datetime.fromisoformat(iso).timestamp())


def _age_seconds(timestamp: float) -> float:
    import time

    return time.time() - timestamp
