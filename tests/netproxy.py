"""A TCP proxy that makes loopback behave like a real network: latency and a bandwidth cap.

There is no ``tc netem`` here, so tests and benchmarks put this proxy between a
client and a server (sshd) to see what a person on a cloud VM sees::

    with NetProxy("127.0.0.2", server.port, delay=0.025, rate=1_000_000) as proxy:
        api.attach("vm", "ssh", host=proxy.host, port=proxy.port, ...)  # 50 ms RTT, 1 MB/s

Each direction is forwarded in order, every chunk released ``delay`` seconds after
it arrived (a one-way delay; a round trip costs twice that), and paced so that no
more than ``rate`` bytes per second pass (None: no cap). It runs its own asyncio
loop on a daemon thread, listens on loopback only, and closes every connection on
exit. ``pause()``/``resume()`` hold all traffic, as a link that stalls would.

``ProxyProcess`` runs the same proxy in a process of its own, as a real network is
not in the client's process: a benchmark measuring a client's CPU-bound upload
through an in-process proxy measures the two threads' fight for the GIL as well
(seen: a 6 MB upload at 50 ms took 1.3–7 s in-process, ~0.5 s out of it)::

    with ProxyProcess("127.0.0.2", server.port, delay=0.025) as proxy: ...
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

CHUNK = 16384


class NetProxy:
    """Forward ``listen_host:<free port>`` to ``target_host:target_port`` over a slow link."""

    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0,
                 rate: float | None = None, listen_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.rate = rate
        self.host = listen_host
        self.port = 0
        self.bytes_forwarded = 0
        self.connections = 0  # accepted so far (one per SSH connection through the proxy)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="netproxy",
                                        daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._open = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> NetProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> NetProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pause(self) -> None:
        """Hold every byte in both directions until ``resume`` (a stalled link)."""
        self._loop.call_soon_threadsafe(self._open.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._open.set)

    def drop(self) -> None:
        """Close every connection through the proxy now (a dropped link)."""
        asyncio.run_coroutine_threadsafe(self._drop(), self._loop).result(10)

    # -- the loop -------------------------------------------------------------------

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:  # the pipes of connections still open: end them quietly
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _drop(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _serve(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
        except OSError:
            client_w.close()
            return
        for w in (client_w, server_w):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._writers.add(w)
        try:
            await asyncio.gather(self._pipe(client_r, server_w),
                                 self._pipe(server_r, client_w), return_exceptions=True)
        except asyncio.CancelledError:
            pass  # closing: end normally (asyncio reports a cancelled connection task)
        for w in (client_w, server_w):
            self._writers.discard(w)
            w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read as fast as data comes; deliver each chunk ``delay`` later, paced to ``rate``."""
        # Bounded, so a slow link pushes back on the sender as TCP would.
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=256)

        async def deliver() -> None:
            free_at = 0.0  # when the paced link is free to send the next byte
            while True:
                due, data = await queue.get()
                if not data:
                    writer.write_eof() if writer.can_write_eof() else writer.close()
                    return
                await self._open.wait()
                now = time.monotonic()
                if self.rate:
                    free_at = max(free_at, now) + len(data) / self.rate
                    due = max(due, free_at)
                if due > now:
                    await asyncio.sleep(due - now)
                writer.write(data)
                self.bytes_forwarded += len(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK if not self.rate else min(CHUNK, int(
                    max(self.rate / 50, 1024))))
                await queue.put((time.monotonic() + self.delay, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


class ProxyProcess:
    """A ``NetProxy`` in a child process (see the module docstring): ``host``, ``port``,
    ``close``; it ends when this side closes its stdin."""

    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0,
                 rate: float | None = None) -> None:
        self.args = [target_host, str(target_port), str(delay), str(rate or 0)]
        self.host = "127.0.0.1"
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> ProxyProcess:
        self._proc = subprocess.Popen([sys.executable, __file__, *self.args], text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())
        return self

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def slow_link(target_host: str, target_port: int, *, delay: float = 0.025,
              rate: float | None = None) -> Iterator[NetProxy]:
    """``with slow_link(host, port, delay=0.025) as proxy:`` — a 50 ms round trip."""
    with NetProxy(target_host, target_port, delay=delay, rate=rate) as proxy:
        yield proxy


if __name__ == "__main__":  # ProxyProcess: target host, port, delay, rate (0: none)
    host_arg, port_arg, delay_arg, rate_arg = sys.argv[1:5]
    proxy = NetProxy(host_arg, int(port_arg), delay=float(delay_arg),
                     rate=float(rate_arg) or None).start()
    print(proxy.port, flush=True)
    sys.stdin.read()  # until the parent closes it (or goes away)
    proxy.close()
