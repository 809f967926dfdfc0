"""The run store: one SQLite database per workspace (``runs.db``), in WAL mode.

Many processes write at once (20 submits from 20 shells, a kernel following a run
while the CLI cancels it), so every write is a short ``BEGIN IMMEDIATE``
transaction behind a generous busy timeout. The schema is versioned with
``PRAGMA user_version``; ``MIGRATIONS[n]`` takes version n to n+1.

Many threads share one ``RunStore`` too (a widget's Cancel button, a follower, the
kernel): its one connection is used under a lock, so their transactions never
interleave.

The store mirrors what the agents persist on the targets; it is never the only
copy of what happened there. A status only moves forward (``advance``): a reader
holding an old copy cannot turn Completed back into Running.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import ComputeError, RunNotFoundError

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from typing import Any

MIGRATIONS = [
    """
    CREATE TABLE runs (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        target     TEXT NOT NULL,
        kind       TEXT NOT NULL,          -- script | notebook
        status     TEXT NOT NULL,
        exit_code  INTEGER,
        error      TEXT,
        created    TEXT NOT NULL,
        started    TEXT,
        ended      TEXT,
        script     TEXT NOT NULL,
        arguments  TEXT NOT NULL,          -- JSON list
        source_dir TEXT NOT NULL,
        snapshot   TEXT NOT NULL,          -- JSON {id, files, bytes, new_files, new_bytes}
        git        TEXT,                   -- JSON {repository, branch, commit, dirty} or NULL
        spec       TEXT NOT NULL,          -- JSON: what the agent was asked to do
        parent_id  TEXT                    -- the sweep a child run belongs to
    );
    CREATE INDEX runs_by_created ON runs (created DESC);
    """,
]

_JSON_COLUMNS = ("arguments", "snapshot", "git", "spec")


def _rank_sql(expr: str) -> str:
    """SQL for ``protocol.status_rank(expr)``, so the store ranks statuses as the agent does."""
    whens = " ".join(f"WHEN '{name}' THEN {rank}" for name, rank in
                     sorted(protocol.STATUS_RANK.items()))
    return f"(CASE {expr} {whens} ELSE 0 END)"


_TERMINAL_RANK = max(protocol.STATUS_RANK.values())
#: The row changes only if the new status is further along than the stored one, or the
#: same and not terminal (filling in fields); a terminal status is never replaced.
_ADVANCES = (f"({_rank_sql('status')} < {_rank_sql(':status')} OR "
             f"(status = :status AND {_rank_sql('status')} < {_TERMINAL_RANK}))")


@dataclass
class RunRecord:
    """One row of the store; ``to_dict()`` is the ``show --json`` shape."""

    id: str
    name: str
    target: str
    kind: str
    status: str
    created: str
    script: str
    arguments: list[str]
    source_dir: str
    snapshot: dict[str, Any]
    spec: dict[str, Any] = field(default_factory=dict)
    git: dict[str, Any] | None = None
    exit_code: int | None = None
    error: str | None = None
    started: str | None = None
    ended: str | None = None
    parent_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        spec = d.pop("spec") or {}
        secret = set(spec.get("secret_env") or ())
        d["environment_variables"] = {
            name: protocol.SECRET_MASK if name in secret or protocol.is_secret_name(name)
            else value for name, value in (spec.get("environment_variables") or {}).items()}
        d["git"] = self.git or {"repository": None, "branch": None, "commit": None,
                                "dirty": None}
        return d


class RunStore:
    """Runs of one workspace: ``RunStore(ws / "runs.db")``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()  # one connection, many threads: one at a time
        try:
            self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                       check_same_thread=False)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 60000")
            # In WAL mode NORMAL never corrupts; it only skips an fsync per commit.
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise ComputeError(f"run store {self.path} is unusable ({exc}); move it aside "
                               "to start a fresh one") from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == len(MIGRATIONS):
            return
        # Switching to WAL does not wait on the busy handler: retry it ourselves.
        for attempt in range(200):
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                time.sleep(0.01 * (1 + attempt % 10))
        with self._transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise ComputeError(f"{self.path} was written by a newer jupyter_compute "
                                   f"(schema {version}); upgrade jupyter_compute")
            for step in MIGRATIONS[version:]:
                for statement in step.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def insert(self, record: RunRecord) -> None:
        row = asdict(record)
        for col in _JSON_COLUMNS:
            row[col] = json.dumps(row[col])
        cols = ", ".join(row)
        marks = ", ".join(f":{c}" for c in row)
        with self._transaction() as db:
            db.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", row)

    def update(self, run_id: str, **fields: Any) -> None:
        """Set columns of one run, e.g. ``update(id, error="stopped early")``.

        With a ``status``, this is ``advance``: the row changes only if it moves forward.
        """
        if "status" in fields:
            self.advance(run_id, **fields)
            return
        for col in _JSON_COLUMNS:
            if col in fields:
                fields[col] = json.dumps(fields[col])
        sets = ", ".join(f"{c} = :{c}" for c in fields)
        with self._transaction() as db:
            db.execute(f"UPDATE runs SET {sets} WHERE id = :_id", {**fields, "_id": run_id})

    def advance(self, run_id: str, status: str, **fields: Any) -> RunRecord:
        """Move run ``run_id`` to ``status`` (setting ``fields`` with it) if that is forward.

        Forward means ``protocol.advances`` (Queued < Preparing < Running < terminal), or
        the same non-terminal status with fields filled in; a terminal status is never
        replaced. The check and the write are one SQL statement, so two readers racing
        cannot undo each other. Returns the record as stored afterwards: what was accepted.

        >>> store.advance(run_id, "Completed", exit_code=0).status
        'Completed'
        """
        for col in _JSON_COLUMNS:
            if col in fields:
                fields[col] = json.dumps(fields[col])
        fields["status"] = str(status)
        sets = ", ".join(f"{c} = :{c}" for c in fields)
        with self._transaction() as db:
            db.execute(f"UPDATE runs SET {sets} WHERE id = :_id AND {_ADVANCES}",
                       {**fields, "_id": run_id})
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise RunNotFoundError(run_id)
        return _record(row)

    def get(self, run_id: str) -> RunRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            close = [] if row is not None else [r[0] for r in self._db.execute(
                "SELECT id FROM runs WHERE id LIKE ? ORDER BY created DESC LIMIT 2",
                (f"%{run_id}%",))]
        if row is None:
            hint = f" — did you mean {close[0]!r}?" if len(close) == 1 else ""
            if len(close) == 1 and run_id and close[0].endswith(run_id):
                return self.get(close[0])  # a unique suffix is as good as the id
            raise RunNotFoundError(run_id, hint)
        return _record(row)

    def list(self, limit: int | None = None, status: str | None = None,
             parent_id: str | None = None) -> list[RunRecord]:
        """Runs, newest first."""
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if parent_id:
            where.append("parent_id = ?")
            args.append(parent_id)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created DESC, id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        return [_record(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _record(row: sqlite3.Row) -> RunRecord:
    d = dict(row)
    for col in _JSON_COLUMNS:
        d[col] = json.loads(d[col]) if d[col] is not None else None
    return RunRecord(**d)

