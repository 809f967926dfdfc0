"""``Follower``: reads a run by offset on a background thread and hands over batches.

It is the only thing that polls; a widget only applies what it is given. Memory
stays bounded however much the run prints: of a burst of log lines only the last
``tail_lines`` are kept (the rest are counted), and reads happen in ticks of
``interval`` seconds, so a consumer gets at most ``1 / interval`` batches a second.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from jupyter_compute.protocol import RunStatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from jupyter_compute.runs import Run


@dataclass
class Batch:
    """What changed in one tick."""

    status: RunStatus
    lines: list[str] = field(default_factory=list)   # new complete lines (the tail of them)
    skipped: int = 0                                  # new lines not in ``lines``
    metrics: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False                                # the run ended and all was read


class PollingThread:
    """A daemon thread that calls ``tick()`` every ``interval`` seconds until it returns
    True or ``stop()`` is called. An error is kept in ``error`` and retried a second
    later (e.g. a host that dropped): a follower must never die silently."""

    def __init__(self, name: str, interval: float) -> None:
        self.interval = interval
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def tick(self) -> bool:
        """One round of work; True when there is nothing more to follow."""
        raise NotImplementedError

    def start(self) -> PollingThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if self.tick():
                    return
            except Exception as exc:  # noqa: BLE001 - kept for whoever looks, then retried
                self.error = exc
                self._stop.wait(1.0)
                continue
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


class Follower(PollingThread):
    """Follow ``run`` on a daemon thread, calling ``on_batch`` at most every ``interval`` s.

    ``on_batch`` runs on the follower's thread; it must only set traits or append
    output (never ``with out:``). ``log_offset`` makes a follower resumable.

    >>> f = Follower(run, lambda b: print(b.status, len(b.lines)))
    >>> f.start()
    """

    def __init__(self, run: Run, on_batch: Callable[[Batch], None], interval: float = 0.1,
                 tail_lines: int = 500, log_offset: int = 0) -> None:
        super().__init__(f"follow-{run.id}", interval)
        self.run = run
        self.on_batch = on_batch
        self.tail_lines = tail_lines
        self.log_offset = log_offset
        self.metrics_offset = 0

    def tick(self) -> bool:
        batch = self.poll()
        self.on_batch(batch)
        return batch.done

    def poll(self) -> Batch:
        """Read what is new since the last poll (one tick, on the caller's thread)."""
        status = self.run.status()
        done = status.is_terminal()  # read before the log: the log is then final
        data = self.run.read_log(self.log_offset)
        end = len(data) if done else data.rfind(b"\n") + 1
        chunk = data[:end]
        self.log_offset += end
        lines = _last_lines(chunk, self.tail_lines)
        total = chunk.count(b"\n") + (1 if chunk and not chunk.endswith(b"\n") else 0)
        metrics, self.metrics_offset = self.run.read_metrics(self.metrics_offset)
        return Batch(status, lines, total - len(lines), metrics, done)


def _last_lines(chunk: bytes, n: int) -> list[str]:
    """The last ``n`` lines of ``chunk``, decoded; only they are ever decoded, so a
    flood of a million lines costs a few C-level scans."""
    pos = len(chunk) - 1 if chunk.endswith(b"\n") else len(chunk)
    for _ in range(n):
        pos = chunk.rfind(b"\n", 0, pos)
        if pos < 0:
            break
    start = pos + 1 if n else len(chunk)
    return chunk[start:].decode(errors="replace").splitlines(keepends=True)
