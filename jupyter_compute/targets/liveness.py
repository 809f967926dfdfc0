"""The one rule for "is this run still going?", and the submitting client's heartbeat.

A run is judged lost only when what should be driving it is provably gone:

- once the agent has started (``status.json`` has its ``agent`` identity): its pid
  with start ticks and boot id where the host can tell, else its heartbeat;
- before that, the client that is submitting it (uploading a snapshot over a slow
  link, building an image) keeps it alive with a heartbeat of its own in the local
  run folder (``client.json``): the run is "client lost" only when that client is
  gone too, and "agent lost" only when the agent has not shown up within
  ``START_TIMEOUT`` after the client launched it.

``lost`` is pure (no I/O), so every case is a unit test with plain dicts.
"""

from __future__ import annotations

import json
import os
import threading
import time

from jupyter_compute import protocol

TYPE_CHECKING = False  # typing costs ~5 ms to import; annotations are strings
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

#: In the local run folder: the submitting client's identity; its mtime is the beat.
CLIENT = "client.json"
#: The same file once the agent is launched (a rename: no second write); its mtime is when.
LAUNCHED = "client-launched.json"


def lost(status: dict[str, Any], *, agent_alive: bool | None, heartbeat_age: float | None,
         client: dict[str, Any] | None, now: float | None = None) -> str | None:
    """Why a non-terminal run is lost, or None while it may still be going.

    ``agent_alive`` is what the host (or launcher) knows of the agent's process (None:
    cannot tell), ``heartbeat_age`` the age of its heartbeat file (None: no file),
    ``client`` what ``client_state`` read (None: no client record, an older run).

    >>> lost({"status": "Queued", "created": protocol.utcnow()}, agent_alive=None,
    ...      heartbeat_age=None, client=None) is None
    True
    """
    now = time.time() if now is None else now
    ident = status.get("agent")
    if ident:
        if agent_alive:
            return None
        if agent_alive is None:  # no pid check possible: the heartbeat decides
            age = heartbeat_age if heartbeat_age is not None else \
                now - _timestamp(status.get("updated"), now)
            if age < protocol.HEARTBEAT_TIMEOUT:
                return None
            return (f"agent lost: no heartbeat from the agent for {age:.0f}s (the machine "
                    "restarted, or the agent was killed)")
        who = f" (pid {ident.get('pid')})" if ident.get("pid") else ""
        return (f"agent lost: the agent{who} died before the run ended (killed, or the "
                "machine restarted)")
    if agent_alive is False:  # the launcher saw where the agent would run end
        return "agent lost: the agent's container or job ended before the agent started"
    if client is None:  # no client record: judge by the run's age alone
        age = now - _timestamp(status.get("created"), now)
        if age < protocol.START_TIMEOUT:
            return None
        return f"agent lost: the agent did not start within {protocol.START_TIMEOUT:.0f}s"
    launched = client.get("launched")
    if launched is None:  # still uploading or building: the client's own beat counts
        alive = client.get("alive")  # None: its pid cannot be checked from here
        if alive or alive is None and client.get("age", 0.0) < protocol.HEARTBEAT_TIMEOUT:
            return None
        pid = (client.get("identity") or {}).get("pid")
        who = f" (pid {pid})" if pid else ""
        return (f"client lost: the process that was submitting the run{who} ended before "
                "the run was started; submit it again")
    if now - float(launched) < protocol.START_TIMEOUT:
        return None
    return (f"agent lost: the agent did not start within {protocol.START_TIMEOUT:.0f}s of "
            "being launched (see agent.out in the run folder on the target)")


def client_state(run_dir: Path) -> dict[str, Any] | None:
    """The submitting client as the ``client`` argument of ``lost``: its identity, whether
    it lives (None: cannot tell from here), its beat's age and when it launched the agent."""
    for name in (LAUNCHED, CLIENT):  # launched first: the rename may happen in between
        path = os.path.join(str(run_dir), name)
        try:
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            mtime = os.stat(path).st_mtime
            break
        except (OSError, ValueError):
            continue
    else:
        return None
    if not isinstance(record, dict):
        return None
    ident = record.get("identity") or {}
    launched = mtime if name == LAUNCHED else None
    return {"identity": ident, "launched": launched, "age": time.time() - mtime,
            "alive": protocol.process_alive(ident) if ident else None}


class ClientBeat:
    """While a submission uploads and launches, tell readers that its client lives: by its
    process identity, and where that cannot be checked, a beat every few seconds.

    ::

        with ClientBeat(run_dir) as beat:
            host.sync(ctx)          # may take minutes over a slow link
            launcher.launch(...)
            beat.launched()         # from now on the agent must show up itself
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = os.path.join(str(run_dir), CLIENT)
        self.record: dict[str, Any] = {"identity": protocol.process_identity(os.getpid())}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ClientBeat:
        protocol.write_json_atomic(self.path, self.record)
        if protocol.process_alive(self.record["identity"]) is None:
            # Readers cannot check this pid (no /proc): beat. Where they can, the pid is
            # exact and no thread is needed (the CLI forks its agent only when it has none).
            self._thread = threading.Thread(target=self._beat, name="jc-client-beat",
                                            daemon=True)
            self._thread.start()
        return self

    def launched(self) -> None:
        self._done.set()
        os.utime(self.path)  # the mtime of the renamed file says when
        os.rename(self.path, os.path.join(os.path.dirname(self.path), LAUNCHED))

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._done.wait(protocol.HEARTBEAT_SECONDS):
            try:
                os.utime(self.path)
            except OSError:  # renamed: launched
                return


def _timestamp(iso: str | None, default: float) -> float:
    if not iso:
        return default
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
