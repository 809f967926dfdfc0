"""Every error jupyter_compute raises on purpose.

::

    ComputeError                      root: one clear line, says what to do
    ├── UsageError                    bad flags or arguments (CLI exit 2)
    │   └── ConflictError             it exists already (a target of that name)
    ├── ConfigError(path, line, key)  a YAML file is malformed or has a bad key
    ├── WorkspaceError                no .jupyter_compute/ where one is needed
    ├── TargetError                   a target that cannot work (engine down, host away)
    │   ├── RemoteCommandError(returncode, command, stderr)
    │   └── (ssh) HostUnreachableError, HostKeyError, SSHAuthError, RemotePythonError
    ├── SnapshotError                 source folder cannot be snapshotted
    │   └── SnapshotLimitError(largest)  over the size or changed-file limit
    ├── RunNotFoundError(run_id)      no such run in the store
    └── RunFailedError(run_id, status, summary)  wait(raise_on_failure=True)

Library errors (paramiko, docker, ray, sqlite) are translated at the boundary with
``raise ... from exc`` so a user never has to read a foreign traceback.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ComputeError",
    "ConfigError",
    "ConflictError",
    "RemoteCommandError",
    "RunFailedError",
    "RunNotFoundError",
    "SnapshotError",
    "SnapshotLimitError",
    "TargetError",
    "UsageError",
    "WorkspaceError",
]


class ComputeError(Exception):
    """Base of all jupyter_compute errors; its message is one line that says what to do."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing the traceback wall (ipyparallel's
        # RemoteError does the same); JUPYTER_COMPUTE_DEBUG=1 brings the wall back.
        if os.environ.get("JUPYTER_COMPUTE_DEBUG"):
            import traceback

            return traceback.format_exception(type(self), self, self.__traceback__)
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


class UsageError(ComputeError):
    """Bad command-line or magic arguments."""


class ConflictError(UsageError):
    """What is being created exists already, e.g. a target of the same name."""


class ConfigError(ComputeError):
    """A configuration file is malformed or has an invalid key or value."""

    def __init__(self, message: str, *, path: Any = None, line: int | None = None,
                 key: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(where + message)
        self.path, self.line, self.key = path, line, key


class WorkspaceError(ComputeError):
    """The workspace folder is missing or unusable."""


class TargetError(ComputeError):
    """A compute target is unknown, misconfigured or unreachable."""


class RemoteCommandError(TargetError):
    """A command on a target exited non-zero."""

    def __init__(self, returncode: int, command: str, stderr: str = "") -> None:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else "no output"
        super().__init__(f"{command!r} exited {returncode}: {tail}")
        self.returncode, self.command, self.stderr = returncode, command, stderr


class SnapshotError(ComputeError):
    """The source folder cannot be snapshotted."""


class SnapshotLimitError(SnapshotError):
    """The snapshot is over the size or changed-file limit."""

    def __init__(self, message: str, largest: list[tuple[str, int]]) -> None:
        super().__init__(message)
        self.largest = largest


class RunNotFoundError(ComputeError):
    """No run with this id in the workspace's store."""

    def __init__(self, run_id: str, hint: str = "") -> None:
        super().__init__(f"no run {run_id!r} in this workspace{hint}; list runs with "
                         "'jupyter-compute runs'")
        self.run_id = run_id


class RunFailedError(ComputeError):
    """A run ended in a state other than Completed."""

    def __init__(self, run_id: str, status: str, summary: str = "") -> None:
        msg = f"run {run_id} ended {status}"
        super().__init__(msg + (f": {summary}" if summary else ""))
        self.run_id, self.status, self.summary = run_id, status, summary
