"""One helper session per SSH connection: run files pushed, not polled.

``session(conn)`` is the connection's one ``Session``: it starts the runtime's
``hostsession`` helper on the host over one exec channel and keeps it. Every run
and follower on that host in this process shares it::

    s = session(conn)
    watch = s.watch(run_id, local_run_folder)   # log, metrics, status pushed from now
    s.request("alive", {"ident": ident})        # one round trip, any thread
    s.wait_change(run_id, since, timeout=1.0)   # wakes when something arrives

A watched run's log and metrics are appended to its local mirror (the workspace's
run folder) as they arrive, each at its byte offset, so a reader reads them here
and the network is quiet while nothing changes. When the connection drops, pushes
stop; a thread reconnects with the connection's backoff and watches again from
the mirror's sizes, so every byte arrives once. A run whose terminal status
arrived is complete here (the helper pushes a log's bytes before the status that
follows them) and is not watched again.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from jupyter_compute import protocol
from jupyter_compute.exceptions import TargetError
from jupyter_compute.targets.ssh.connection import (
    BACKOFF_FIRST,
    BACKOFF_MAX,
    CALL_TIMEOUT,
    Connection,
    HostUnreachableError,
    python_command,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    import paramiko

_APPENDED = (protocol.LOG, protocol.METRICS)


class SessionError(TargetError):
    """The helper on the host could not do what was asked (its one-line reason)."""


@dataclass
class Watch:
    """What this process knows of one watched run; changed by the session's reader."""

    run_id: str
    folder: Path                        # the local run folder (the mirror)
    ready: threading.Event = field(default_factory=threading.Event)
    status: bytes | None = None         # the host's status.json, as last pushed
    agent: dict[str, Any] | None = None  # the agent identity the liveness is about
    alive: bool | None = None           # the agent, by the host's /proc
    stale: bool = False                 # its heartbeat, by the host's clock
    beat: float | None = None           # heartbeat age (host clock) when last pushed
    final: bool = False                 # a terminal status arrived: all is here
    version: int = 0                    # bumped on every push


class Session:
    """The client's side of ``hostsession``; see the module docstring."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Condition()
        self.send_lock = threading.Lock()
        self.open_lock = threading.Lock()
        self.watches: dict[str, Watch] = {}
        self.pending: dict[int, list[Any]] = {}
        self.ids = itertools.count(1)
        self.chan: paramiko.Channel | None = None
        self.starts = 0                 # helpers started (1, plus one per reconnect)
        self.stopped = False
        self._reconnecting = False

    # -- the channel --------------------------------------------------------------------

    @property
    def live(self) -> bool:
        chan = self.chan
        return chan is not None and not chan.closed and chan.get_transport() is not None \
            and chan.get_transport().is_active()

    def ensure(self) -> None:
        """Start the helper unless it runs (connecting first); raise
        ``HostUnreachableError`` when the host cannot be reached now."""
        if self.live:
            return
        with self.open_lock:
            if self.live:
                return
            self._open()

    def start_soon(self) -> None:
        """Start the helper on a thread (a submit goes on meanwhile)."""
        if not self.live:
            threading.Thread(target=self.ensure_quietly, daemon=True,
                             name="ssh-session-start").start()

    def ensure_quietly(self) -> None:
        try:
            self.ensure()
        except Exception:  # noqa: BLE001 - the next use says what is wrong
            pass

    def _open(self) -> None:
        import jupyter_compute.hostsession as hostsession

        conn = self.conn
        if not conn.connected:
            conn.connect()
        # not under conn.lock: the probe may hold it, and the helper starts meanwhile
        client = conn.client
        transport = client.get_transport() if client is not None else None
        source = Path(hostsession.__file__).read_text()
        command = python_command(conn.python, source, conn.workdir)

        def start() -> paramiko.Channel:
            if transport is None or not transport.is_active():
                raise EOFError("the connection is closed")
            chan = transport.open_session(timeout=conn.endpoint.timeout)
            conn.channels += 1
            chan.exec_command(command)
            return chan

        chan = conn._guard(start)  # a dropped connection: HostUnreachableError
        chan.settimeout(None)
        self.chan = chan
        self.starts += 1
        threading.Thread(target=self._read, args=(chan,), daemon=True,
                         name="ssh-session-read").start()
        with self.lock:
            todo = [w for w in self.watches.values() if not w.final]
        for watch in todo:  # after a reconnect: on from what the mirror holds
            self._send_watch(watch)

    def _read(self, chan: paramiko.Channel) -> None:
        """The reader thread: answers to requests, and pushes into the mirror."""
        stream = chan.makefile("rb")
        try:
            while True:
                head = stream.readline().split()
                if len(head) != 4:
                    break
                op, ident = head[0].decode(), int(head[1])
                meta = json.loads(_exact(stream, int(head[2])) or b"{}")
                data = _exact(stream, int(head[3]))
                if ident:
                    with self.lock:
                        waiting = self.pending.pop(ident, None)
                    if waiting is not None:
                        waiting[1] = (op, meta, data)
                        waiting[0].set()
                else:
                    self._pushed(op, meta, data)
        except Exception:  # noqa: BLE001 - a dropped link ends the reader; see below
            pass
        self._closed(chan)

    def _closed(self, chan: paramiko.Channel) -> None:
        chan.close()
        with self.lock:
            if self.chan is chan:
                self.chan = None
            failed, self.pending = self.pending, {}
            for watch in self.watches.values():
                watch.ready.clear()
                watch.version += 1
            self.lock.notify_all()
            again = not self.stopped and not self._reconnecting and any(
                not w.final for w in self.watches.values())
            if again:
                self._reconnecting = True
        for waiting in failed.values():
            waiting[0].set()  # no answer: the caller raises HostUnreachableError
        if again:
            threading.Thread(target=self._reconnect, daemon=True,
                             name="ssh-session-reconnect").start()

    def _reconnect(self) -> None:
        """Start the helper again, waiting longer after each failure, while runs are
        followed; each is watched again from its mirror's sizes."""
        delay = BACKOFF_FIRST
        try:
            while not self.stopped:
                with self.lock:
                    if not any(not w.final for w in self.watches.values()):
                        return
                try:
                    self.ensure()
                    return
                except Exception:  # noqa: BLE001 - unreachable for now: try again later
                    time.sleep(delay)
                    delay = min(BACKOFF_MAX, delay * 2)
        finally:
            with self.lock:
                self._reconnecting = False

    def stop(self) -> None:
        """End the session (the connection is closing for good)."""
        self.stopped = True
        chan, self.chan = self.chan, None
        if chan is not None:
            chan.close()

    # -- requests -----------------------------------------------------------------------

    def request(self, op: str, meta: dict[str, Any], data: bytes = b"",
                timeout: float = CALL_TIMEOUT) -> tuple[dict[str, Any], bytes]:
        """Ask the helper and wait for its answer: ``(meta, data)``."""
        return self.answer(self.ask(op, meta, data), timeout)

    def ask(self, op: str, meta: dict[str, Any], data: bytes = b"") -> Asked:
        """Send a request without waiting: its answer comes through ``answer``."""
        asked = self._register(op)
        try:
            self._send(op, asked.ident, meta, data)
        except Exception as exc:
            with self.lock:
                self.pending.pop(asked.ident, None)
            raise HostUnreachableError(f"lost the connection to {self.conn.endpoint.label}: "
                                       f"{exc or type(exc).__name__}") from exc
        return asked

    def stream(self, op: str, meta: dict[str, Any],
               produce: Callable[[Callable[[bytes], None]], None],
               timeout: float = CALL_TIMEOUT) -> tuple[dict[str, Any], bytes]:
        """A request whose data ``produce(write)`` writes as it goes (a streamed sync,
        ended by its own last frame); then wait for its answer.

        Nothing else goes out on the channel meanwhile. If ``produce`` fails midway,
        the helper cannot tell where the stream stopped: the channel is closed (the
        next request starts a new helper) and the error raised.
        """
        asked = self._register(op)
        chan = self.chan
        try:
            if chan is None:
                raise EOFError("the session is closed")
            head = json.dumps(meta).encode()
            with self.send_lock:
                chan.sendall(f"{op} {asked.ident} {len(head)} *\n".encode() + head)
                produce(chan.sendall)
        except BaseException as exc:
            with self.lock:
                self.pending.pop(asked.ident, None)
            # the link, or a local file (one deleted since the snapshot): the same errors
            dropped = isinstance(exc, (OSError, EOFError)) and not self.live
            if chan is not None:
                chan.close()
            if dropped:
                raise HostUnreachableError(f"lost the connection to "
                                           f"{self.conn.endpoint.label}: "
                                           f"{exc or type(exc).__name__}") from exc
            raise
        return self.answer(asked, timeout)

    def _register(self, op: str) -> Asked:
        self.ensure()
        asked = Asked(op, next(self.ids))
        with self.lock:
            self.pending[asked.ident] = asked.waiting
        return asked

    def answer(self, asked: Asked, timeout: float = CALL_TIMEOUT
               ) -> tuple[dict[str, Any], bytes]:
        """Wait for the answer to ``asked``: ``(meta, data)``."""
        op, ident, waiting = asked.op, asked.ident, asked.waiting
        if not waiting[0].wait(timeout) or waiting[1] is None:
            with self.lock:
                self.pending.pop(ident, None)
            raise HostUnreachableError(f"lost the connection to {self.conn.endpoint.label} "
                                       f"(no answer to {op})")
        kind, answer, body = waiting[1]
        if kind == "err":
            raise SessionError(f"{op} on {self.conn.endpoint.label} failed: "
                               f"{answer.get('error')}")
        return answer, body

    def _send(self, op: str, ident: int, meta: dict[str, Any], data: bytes = b"") -> None:
        chan = self.chan
        if chan is None:
            raise EOFError("the session is closed")
        head = json.dumps(meta).encode()
        with self.send_lock:
            chan.sendall(f"{op} {ident} {len(head)} {len(data)}\n".encode() + head + data)

    # -- watched runs -------------------------------------------------------------------

    def watch(self, run_id: str, folder: Path, timeout: float = CALL_TIMEOUT) -> Watch:
        """The run's watch, started if new; waits until its first push has arrived.

        Raises ``HostUnreachableError`` when the host cannot be reached now (the
        mirror then holds what arrived before).
        """
        with self.lock:
            watch = self.watches.get(run_id)
            if watch is None:
                watch = self.watches[run_id] = Watch(run_id, folder)
        if watch.final or watch.ready.is_set():
            return watch
        self.ensure()
        if not watch.ready.is_set():
            self._send_watch(watch)
            if not watch.ready.wait(timeout):
                raise HostUnreachableError(f"no answer from {self.conn.endpoint.label} while "
                                           "watching a run")
        return watch

    def watched(self, run_id: str) -> Watch | None:
        """The run's watch if it is up to date (pushes arrive), else None."""
        watch = self.watches.get(run_id)
        if watch is not None and (watch.final or (watch.ready.is_set() and self.live)):
            return watch
        return None

    def watch_later(self, run_id: str, folder: Path) -> dict[str, Any]:
        """Register ``run_id`` and return the ``watch`` arguments to send with a request
        (``sync``'s start: the helper watches the run at once, no round trip more)."""
        with self.lock:
            watch = self.watches.get(run_id)
            if watch is None:
                watch = self.watches[run_id] = Watch(run_id, folder)
        return self._watch_meta(watch)

    def watch_started(self, run_id: str) -> None:
        """The request carrying ``watch_later``'s arguments was answered."""
        watch = self.watches.get(run_id)
        if watch is not None:
            watch.ready.set()

    def _watch_meta(self, watch: Watch) -> dict[str, Any]:
        return {"run": watch.run_id, "log": _size(watch.folder / protocol.LOG),
                "metrics": _size(watch.folder / protocol.METRICS)}

    def _send_watch(self, watch: Watch) -> None:
        ident = next(self.ids)
        waiting: list[Any] = [threading.Event(), None]

        def answered() -> None:  # the helper pushes first, then answers: ready now
            if waiting[0].wait(CALL_TIMEOUT) and waiting[1] and waiting[1][0] == "ok":
                with self.lock:
                    watch.ready.set()
                    watch.version += 1
                    self.lock.notify_all()

        with self.lock:
            self.pending[ident] = waiting
        try:
            self._send("watch", ident, self._watch_meta(watch))
        except Exception:  # noqa: BLE001 - the reader thread sees the drop and reconnects
            with self.lock:
                self.pending.pop(ident, None)
            return
        threading.Thread(target=answered, daemon=True, name="ssh-session-watch").start()

    def forget(self, run_id: str) -> None:
        """Stop watching ``run_id`` (its end was fetched)."""
        with self.lock:
            watch = self.watches.pop(run_id, None)
        if watch is not None and not watch.final and self.live:
            try:
                self._send("unwatch", next(self.ids), {"run": run_id})
            except Exception:  # noqa: BLE001 - gone with the connection anyway
                pass

    def change_count(self, run_id: str) -> int:
        watch = self.watches.get(run_id)
        return watch.version if watch is not None else 0

    def wait_change(self, run_id: str, since: int, timeout: float) -> None:
        """Wait until something about ``run_id`` arrives (or ``timeout`` passes)."""
        with self.lock:
            watch = self.watches.get(run_id)
            if watch is not None and not watch.final:
                self.lock.wait_for(lambda: watch.version != since, timeout)
                return
        if watch is None:
            time.sleep(timeout)  # not watched (the host is unreachable): poll

    def _pushed(self, op: str, meta: dict[str, Any], data: bytes) -> None:
        with self.lock:
            watch = self.watches.get(str(meta.get("run")))
        if watch is None:
            return
        try:
            self._apply(watch, op, meta, data)
        except OSError:
            pass  # the local run folder is gone (a workspace removed): nothing to keep
        with self.lock:
            watch.version += 1
            self.lock.notify_all()

    def _apply(self, watch: Watch, op: str, meta: dict[str, Any], data: bytes) -> None:
        if op == "data" and meta.get("name") in _APPENDED:
            append_local(watch.folder / meta["name"], int(meta["at"]), data)
        elif op == "status":
            watch.status = data
            mirror_status(watch.folder, data)
            try:
                st = json.loads(data)
            except ValueError:
                st = {}
            watch.agent = st.get("agent") if isinstance(st, dict) else None
            self._live(watch, meta)
            if isinstance(st, dict) and st.get("status") in protocol.TERMINAL_STATUSES:
                watch.final = True  # the helper pushed the whole log first
        elif op == "live":
            self._live(watch, meta)

    @staticmethod
    def _live(watch: Watch, meta: dict[str, Any]) -> None:
        if "alive" in meta:
            watch.alive, watch.stale = meta["alive"], bool(meta.get("stale"))
            watch.beat = meta.get("beat")

    def liveness(self, ident: dict[str, Any]) -> tuple[bool, bool | None] | None:
        """``(True, alive)`` if a watched run's agent is ``ident`` (pushed), else None."""
        for watch in list(self.watches.values()):
            if watch.agent and _same(watch.agent, ident) and self.watched(watch.run_id):
                return True, watch.alive
        return None


class Asked:
    """A request sent, its answer not yet read (``Session.answer``)."""

    def __init__(self, op: str, ident: int) -> None:
        self.op = op
        self.ident = ident
        self.waiting: list[Any] = [threading.Event(), None]

    def answered(self) -> bool:
        return self.waiting[0].is_set()


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("pid", "start_ticks", "boot_id", "host"))


def _exact(stream: Any, n: int) -> bytes:
    data = stream.read(n) if n else b""
    if len(data) != n:
        raise EOFError("the session ended mid-message")
    return bytes(data)


# -- the pool: one session per connection ------------------------------------------------

_SESSIONS: dict[int, Session] = {}
_SESSIONS_LOCK = threading.Lock()


def session(conn: Connection) -> Session:
    """The connection's one session (not started until used)."""
    with _SESSIONS_LOCK:
        found = _SESSIONS.get(id(conn))
        if found is None or found.conn is not conn:
            found = _SESSIONS[id(conn)] = Session(conn)
        return found


@atexit.register
def stop_all() -> None:
    """End every session (at exit, or when their connections close for good)."""
    with _SESSIONS_LOCK:
        found = list(_SESSIONS.values())
        _SESSIONS.clear()
    for each in found:
        each.stop()


# -- the local mirror --------------------------------------------------------------------


def read_local(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def terminal(raw: bytes) -> bool:
    try:
        return protocol.RunStatus(json.loads(raw)["status"]).is_terminal()
    except (ValueError, KeyError, TypeError):
        return False


def mirror_status(folder: Path, data: bytes) -> bytes:
    """Keep the host's status here too; a terminal status here is never replaced."""
    path = folder / protocol.STATUS
    try:
        have = path.read_bytes()
    except FileNotFoundError:
        have = b""
    if have == data or not data:
        return have or data
    if terminal(have) and not terminal(data):
        return have
    protocol.write_atomic(str(path), data, 0o600)
    return data


def append_local(path: Path, start: int, data: bytes) -> None:
    """Extend the mirror ``path`` with the part of ``data`` (at ``start``) it lacks.

    Under an exclusive lock, so two followers (a kernel and a CLI) never both append
    the same bytes.
    """
    if not data:
        return
    with open(path, "ab") as f:
        _lock(f.fileno())
        have = os.fstat(f.fileno()).st_size
        if start <= have < start + len(data):
            f.write(data[have - start:])


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: one follower at a time is the common case
        return
    fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file is closed
