"""Ignore rules as git applies them: ignore files compiled to one regex per file.

Patterns are translated with pathspec, then rewritten to match each path of a
pruning walk by itself (``rel/`` for folders, ``rel`` for files). Compiled regexes
are cached by file content, so a warm snapshot never imports pathspec.
"""

from __future__ import annotations

import os
import re

from .exceptions import SnapshotError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["IgnoreRules", "Levels", "ignored"]

# The first of these present at the source root replaces .gitignore at every level.
_IGNORE_FILES = (".computeignore", ".amlignore")
_GITIGNORE = ".gitignore"


def _ignore_file_name(root: str) -> str:
    for name in _IGNORE_FILES:
        if os.path.isfile(os.path.join(root, name)):
            return name
    return _GITIGNORE


def _pattern_regex(line: str, to_regex: Callable[[str], tuple[Any, Any]]
                   ) -> tuple[str, bool] | None:
    """``(regex, ignores)`` matching exactly the paths ``line`` names, or None (no-op).

    pathspec's regexes also match everything *below* a matched directory, because it
    tests whole file paths; we walk and prune, testing each directory as ``rel/`` and
    each file as ``rel``, so the tails are rewritten to match the path itself only. That
    matters: with ``*.log`` then ``!logs/``, git still ignores ``logs/a.log``.
    """
    if line.rstrip() in ("/", "!/"):  # names the ignore file's own folder: a no-op
        return None
    try:
        regex, include = to_regex(line)
    except ValueError:  # "!" or a trailing backslash: git ignores such lines too
        return None
    if regex is None or include is None:
        return None
    dir_mark = "(?P<ps_d>/)"
    if regex == ".":  # "*", "**": everything
        rx = "."
    elif regex == dir_mark:  # "*/", "**/": every directory
        rx = r".*/\Z"
    elif regex == "/":  # "**/*/**": everything below the top level
        rx = "[^/]+/."
    else:
        rx = regex.removeprefix("^")
        if rx.endswith(f"(?:{dir_mark}|$)"):  # "name": the file or directory itself
            rx = rx[: -len(f"(?:{dir_mark}|$)")] + r"/?\Z"
        elif rx.endswith(dir_mark):
            rx = rx[: -len(dir_mark)]
            # pathspec folds "a/**/" (directories below a) into "a/" (a itself)
            below = line.rstrip().endswith("/**/")
            rx += r"/.+/\Z" if below else r"/\Z"
        elif rx.endswith("/"):  # "a/**": everything below a, not a itself
            rx += "."
    rx = _git_brackets(rx.replace(dir_mark, "/"))
    try:
        re.compile(rx)
    except re.error:  # a reversed range such as [z-a]: git matches nothing with it
        return None
    return rx, include


def _git_brackets(rx: str) -> str:
    """Bracket expressions as git reads them: even negated, never matching "/"."""
    out, i = [], 0
    while i < len(rx):
        if rx[i] == "\\":
            out.append(rx[i:i + 2])
            i += 2
        elif rx[i] != "[":
            out.append(rx[i])
            i += 1
        else:
            j = i + 1
            out.append("[")
            if rx[j:j + 1] == "^":
                out.append("^/")
                j += 1
            if rx[j:j + 1] == "]":  # first, it is a member
                out.append("\\]")
                j += 1
            while j < len(rx) and rx[j] != "]":
                out.append("\\[" if rx[j] == "[" else rx[j])  # no "nested set" warning
                j += 1
            out.append("]")
            i = j + 1
    return "".join(out)


def _compile_ignore(content: bytes) -> str | None:
    """One regex for a whole ignore file, or None when it has no patterns.

    Alternatives are in reverse file order, each a named group ``e<n>`` (ignore) or
    ``k<n>`` (keep, a ``!`` line), so the first alternative that matches is the file's
    last matching pattern: one ``re.match`` decides a path at this level.
    """
    try:  # pathspec >= 1.0 names it GitIgnoreSpecPattern; 0.12 only has the old name
        from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern as Pattern
    except ImportError:
        from pathspec.patterns import GitWildMatchPattern as Pattern  # type: ignore[assignment]

    text = content.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape")
    parts = []
    for n, line in enumerate(text.split("\n")):
        compiled = _pattern_regex(line.removesuffix("\r"), Pattern.pattern_to_regex)
        if compiled is not None:
            rx, ignores = compiled
            parts.append(f"(?P<{'e' if ignores else 'k'}{n}>{rx})")
    return "|".join(reversed(parts)) or None


class IgnoreRules:
    """Compiles ignore files, reusing translations cached by file content.

    Keyed by content rather than size+mtime: reading a small file is cheap, and an
    edit that keeps both (racy mtime) cannot then serve stale rules. A hit never
    imports pathspec (~60 ms).
    """

    def __init__(self, root: str, cached: dict[bytes, str | None]) -> None:
        self.name = _ignore_file_name(root)
        self.cached = cached
        self.used: dict[bytes, str | None] = {}  # what this walk needed; saved back

    def load(self, path: str, rel: str) -> tuple[bytes, re.Pattern[str] | None]:
        try:
            with open(path, "rb") as f:
                content = f.read()
        except OSError as exc:
            raise SnapshotError(f"cannot read ignore file {rel}: {exc.strerror}") from exc
        src = self.cached[content] if content in self.cached else _compile_ignore(content)
        self.used[content] = src
        return content, None if src is None else re.compile(src, re.DOTALL)


#: ``(offset, regex)`` of each folder with an ignore file, deepest first.
Levels = tuple[tuple[int, "re.Pattern[str]"], ...]


def ignored(levels: Levels, path: str) -> bool:
    """Whether the deepest ignore level matching ``path`` ignores it (git's precedence)."""
    for offset, rx in levels:
        m = rx.match(path, offset)
        if m is not None:
            return m.lastgroup is not None and m.lastgroup[0] == "e"
    return False
