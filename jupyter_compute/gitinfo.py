"""Where a source folder stands in git: repository, branch, commit and dirtiness.

``git status`` and ``git config`` run as subprocesses, started early so that they
overlap the snapshot's walk of the folder. ``snapshot.git_info(folder)`` is the
one-call form. What the snapshot never ships (its always-excluded folders, passed in by
:mod:`.snapshot`) does not make the tree dirty: JupyterLab's ``.ipynb_checkpoints/``, the
workspace, the run's ``outputs/``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["GitInfo", "GitProbe"]

# environment settings that change how git reads pathspecs (literal ones lose the magic)
_PATHSPEC_ENV = frozenset({"GIT_LITERAL_PATHSPECS", "GIT_GLOB_PATHSPECS",
                           "GIT_NOGLOB_PATHSPECS", "GIT_ICASE_PATHSPECS"})


@dataclass
class GitInfo:
    """Where the source folder stands in git (None fields: unknown or unset)."""

    repository: str | None
    branch: str | None
    commit: str | None
    dirty: bool

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``git`` record: ``{"repository", "branch", "commit", "dirty"}``."""
        return {"repository": self.repository, "branch": self.branch,
                "commit": self.commit, "dirty": self.dirty}


def _in_git_tree(path: str) -> bool:
    while True:
        if os.path.lexists(os.path.join(path, ".git")):
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


class GitProbe:
    """``git status`` and the remote URL, started early so they overlap the walk."""

    def __init__(self, status: subprocess.Popen[bytes], remote: subprocess.Popen[bytes]):
        self.status, self.remote = status, remote

    @classmethod
    def start(cls, source: str, excluded_dirs: Sequence[str] = (),
              root_excluded_dirs: Sequence[str] = ()) -> GitProbe | None:
        """Start the probe of ``source``; None outside a git work tree or without git.

        Changes inside a folder named in ``excluded_dirs`` (at any depth of the
        repository) or ``root_excluded_dirs`` (directly in ``source``) do not count as
        dirty.
        """
        if not _in_git_tree(source):
            return None
        # optional locks off: never contend with the user's own git for index.lock;
        # the user's pathspec settings off: the excludes below are pathspec magic
        env = {key: value for key, value in os.environ.items()
               if key not in _PATHSPEC_ENV}
        env["GIT_OPTIONAL_LOCKS"] = "0"
        opts: dict[str, Any] = {"cwd": source, "env": env, "stdin": subprocess.DEVNULL,
                                "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        try:
            status = subprocess.Popen(["git", "status", "--porcelain=v2", "--branch",
                                       "--untracked-files=normal", "--",
                                       *_excludes(excluded_dirs, root_excluded_dirs)],
                                      **opts)
        except OSError:  # no git on PATH
            return None
        try:
            remote = subprocess.Popen(["git", "config", "--get", "remote.origin.url"], **opts)
        except OSError:
            status.kill()
            status.communicate()
            return None
        return cls(status, remote)

    def result(self) -> tuple[GitInfo | None, str | None]:
        """The info, or None and a warning saying why git could not tell."""
        out, err = self.status.communicate()
        url = self.remote.communicate()[0].decode(errors="replace").strip() or None
        if self.status.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            return None, f"git status failed: {lines[-1] if lines else 'no output'}"
        branch = commit = None
        dirty = False
        for line in out.decode(errors="replace").splitlines():
            if line.startswith("# branch.head "):
                branch = line[len("# branch.head "):]
            elif line.startswith("# branch.oid "):
                commit = line[len("# branch.oid "):]
            elif not line.startswith("#"):
                dirty = True
        return GitInfo(repository=url,
                       branch=None if branch == "(detached)" else branch,
                       commit=None if commit == "(initial)" else commit,
                       dirty=dirty), None

    def close(self) -> None:
        for proc in (self.status, self.remote):
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _excludes(excluded_dirs: Sequence[str], root_excluded_dirs: Sequence[str]) -> list[str]:
    """Exclude-only pathspecs: git then reports the whole work tree minus these folders.

    ``top`` anchors a name-anywhere folder at the repository root (``**/`` also matches
    no folder at all); a root-only folder is relative to ``cwd``, the source folder.
    A collapsed untracked folder (``? .ipynb_checkpoints/``) is matched too.
    """
    return ([f":(top,exclude,glob)**/{name}/**" for name in excluded_dirs]
            + [f":(exclude,glob){name}/**" for name in root_excluded_dirs])
