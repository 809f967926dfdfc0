"""This machine as a host, and the ``local`` kind: this machine × a detached process.

The run folder on this host *is* the workspace's run folder and the blob store is
the workspace's own, so ``sync`` only writes the agent's spec. The agent starts in
a session of its own, so closing the kernel or the shell does not stop the run.
Other kinds reuse ``LocalHost`` (docker and an embedded Ray cluster run here too).
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time

from jupyter_compute import protocol
from jupyter_compute.exceptions import UsageError
from jupyter_compute.targets.base import Host, ProcessLauncher, Target
from jupyter_compute.targets.runtime import install_runtime

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    import subprocess
    from typing import Any

    from jupyter_compute.runspec import RunSpec
    from jupyter_compute.targets.base import SubmitContext

#: Agents started with Popen (from a threaded process), kept so they are reaped.
_children: list[subprocess.Popen[bytes]] = []
_forked: list[int] = []


class LocalHost(Host):
    """This machine: run folders are the workspace's, files are plain file access."""

    folders_here = True
    options = {"python": (str, "interpreter for runs (default: the current one)")}

    def paths(self, ctx: SubmitContext) -> dict[str, Any]:
        # Absolute: the agent, a venv build and the script may each have another cwd.
        paths: dict[str, Any] = {
            "interpreter": ctx.spec.python or self.config.get("python"),
            "manifest": str(ctx.snap.manifest_path), "blobs": str(self.workspace.blobs_dir),
            "env_root": str(self.workspace.dir / "envs")}
        python = paths["interpreter"]
        env = ctx.environment
        if (python and os.path.realpath(python) != os.path.realpath(sys.executable)) or (
                env and (env.get("python") or env.get("venv"))):
            # Another interpreter (or a built environment) may not have jupyter_compute:
            # give it the runtime.
            paths["pythonpath"] = [str(install_runtime(self.workspace.dir))]
        return paths

    def run_dir(self, run_id: str) -> str:
        return str(self.workspace.run_dir(run_id))

    def env_root(self) -> tuple[str, str] | None:
        return sys.executable, str(self.workspace.dir / "envs")

    def sync(self, ctx: SubmitContext) -> None:
        protocol.write_json_atomic(os.path.join(self.run_dir(ctx.run_id), protocol.SPEC),
                                   ctx.agent, 0o600)

    def read(self, run_id: str, name: str, offset: int = 0) -> bytes:
        try:
            with open(self.workspace.run_dir(run_id) / name, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def write(self, run_id: str, name: str, data: bytes) -> None:
        protocol.write_atomic(str(self.workspace.run_dir(run_id) / name), data, 0o600)

    def start_agent(self, run_id: str, python: str | None = None) -> None:
        run_dir = self.run_dir(run_id)
        if python is None and hasattr(os, "fork") and threading.active_count() == 1:
            _fork_agent(run_dir)  # saves starting an interpreter (~35 ms) on the CLI path
            return
        # Forking a threaded process (a kernel) is unsafe: start a fresh interpreter.
        import subprocess

        _children[:] = [p for p in _children if p.poll() is None]
        _children.append(subprocess.Popen(
            [python or sys.executable, "-m", "jupyter_compute.agent", run_dir],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True))

    def run(self, argv: list[str], stdin: bytes = b"", timeout: float = 60
            ) -> tuple[int, bytes, bytes]:
        import subprocess

        done = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
        return done.returncode, done.stdout, done.stderr

    def process_alive(self, ident: dict[str, Any]) -> bool | None:
        return protocol.process_alive(ident)

    def heartbeat_age(self, run_id: str) -> float | None:
        try:
            return time.time() - (self.workspace.run_dir(run_id) / protocol.HEARTBEAT).stat(
            ).st_mtime
        except FileNotFoundError:
            return None

    def signal(self, ident: dict[str, Any], name: str, group: bool = False) -> None:
        if not protocol.process_alive(ident):
            return
        try:
            (os.killpg if group else os.kill)(int(ident["pid"]), getattr(signal, name))
        except (ProcessLookupError, PermissionError):
            pass


class LocalTarget(Target):
    """Runs on this machine, with the current interpreter unless ``python`` is given."""

    kind = "local"
    host_type = LocalHost
    launcher_type = ProcessLauncher
    rank_placement = "local"  # N×K processes here (ranks.py)

    def check_ranks(self, spec: RunSpec) -> None:
        super().check_ranks(spec)
        if spec.distribution is not None and spec.distribution.type == "mpi":
            import shutil

            if shutil.which("mpirun") is None:
                from jupyter_compute.ranks import MPI_INSTALL_HINT

                raise UsageError(f"distribution type mpi starts the ranks under mpirun, which "
                                 f"is not on this machine's PATH: {MPI_INSTALL_HINT}")


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
