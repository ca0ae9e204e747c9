"""A fault-injecting TCP proxy on loopback: one per machine and per server, so a
partition or a slow link can be cut for one machine only.

- ``partition()``: nothing passes either way, as when packets are dropped: bytes already
  sent wait (TCP would retransmit them), new connections are accepted but reach the
  server only when the link heals. Clients time out on their own.
- ``slow(delay_s)``: every chunk waits ``delay_s`` in each direction, in order (a round
  trip pays twice).
- Counts the connections open through it now and at peak, as the server sees them
  (reached it, client still there): a machine's real use of the server, against what
  the connection budget promised.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
CHUNK = 65536


@dataclass
class Target:
    """Where the proxy connects: a TCP address or a Unix socket path."""

    host: str = "127.0.0.1"
    port: int = 0
    unix_path: str | None = None

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.unix_path:
            return await asyncio.open_unix_connection(self.unix_path)
        return await asyncio.open_connection(self.host, self.port)


@dataclass
class ProxyStats:
    open: int = 0
    peak: int = 0
    accepted: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class FaultyProxy:
    def __init__(self, name: str, target: Target, loop: asyncio.AbstractEventLoop) -> None:
        self.name, self.target, self.loop = name, target, loop
        self.stats = ProxyStats()
        self.delay_s = 0.0
        self._healed = asyncio.Event()
        self._healed.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # Fault controls (called on the proxy's loop).
    def set_partitioned(self, partitioned: bool) -> None:
        if partitioned:
            self._healed.clear()
        else:
            self._healed.set()

    def set_delay(self, delay_s: float) -> None:
        self.delay_s = delay_s

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Counted open as the server sees the machine's clients: from the moment the
        connection reaches the server until the client closes it. A connection made
        while the link is cut waits, uncounted, and is dropped at the heal if its
        client gave up meanwhile (a client that times out closes its socket; the
        server never saw it)."""
        self.stats.accepted += 1
        counted = [False]

        def client_closed() -> None:
            if counted[0]:
                counted[0] = False
                self.stats.open -= 1

        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._healed.wait()
            if reader.at_eof() or writer.is_closing():
                return  # the client gave up while the link was cut
            up_reader, upstream = await self.target.connect()
            counted[0] = True
            self.stats.open += 1
            self.stats.peak = max(self.stats.peak, self.stats.open)
            await asyncio.gather(
                self._pump(reader, upstream, up=True, at_eof=client_closed),
                self._pump(up_reader, writer, up=False),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            client_closed()
            self._tasks.discard(task)  # type: ignore[arg-type]
            for w in (writer, upstream):
                if w is not None:
                    with contextlib.suppress(Exception):
                        w.close()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        *,
        up: bool,
        at_eof: Callable[[], None] | None = None,
    ) -> None:
        """Copy until EOF; a partition holds the bytes, a delay spaces them in order."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._healed.wait()
                sink.write(data)
                await sink.drain()
            with contextlib.suppress(Exception):
                sink.close()

        writer_task = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await source.read(CHUNK)
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
                queue.put_nowait((time.monotonic() + self.delay_s, data))
                if not data:
                    if at_eof is not None:
                        at_eof()
                    break
            await writer_task
        finally:
            writer_task.cancel()


@dataclass
class ProxyHost:
    """An asyncio loop in a thread that runs every proxy of the run."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop)
    proxies: list[FaultyProxy] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_forever, name="proxies", daemon=True)
        self._thread.start()

    def call(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)  # type: ignore[arg-type]

    def add(self, name: str, target: Target) -> FaultyProxy:
        proxy = FaultyProxy(name, target, self.loop)
        self.call(proxy.start())
        self.proxies.append(proxy)
        return proxy

    def partition(self, proxies: list[FaultyProxy], partitioned: bool) -> None:
        for proxy in proxies:
            self.loop.call_soon_threadsafe(proxy.set_partitioned, partitioned)

    def slow(self, proxies: list[FaultyProxy], delay_s: float) -> None:
        for proxy in proxies:
            self.loop.call_soon_threadsafe(proxy.set_delay, delay_s)

    def close(self) -> None:
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                self.call(proxy.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
