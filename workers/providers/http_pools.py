"""One HTTP connection pool per worker thread, under the SDK's one client.

httpcore's connection pool, on every request and every response close, walks every
connection it holds under one lock and probes each idle one's socket for readability
(a system call each): with one kept-alive connection per worker thread, 256 threads
made every call walk and probe ~256 sockets, twice, while the other threads waited on
the lock. Here each thread has its own small pool, so the walk is one or two
connections long and nothing is shared but the TLS context. Threads live as long as the
worker process, and so do their pools.
"""

from __future__ import annotations

import ssl
import threading

import httpx2

# A synchronous caller holds one response at a time; the second connection is slack for
# a response left open by an error path, so such a path never waits for the pool.
CONNECTIONS_PER_THREAD = 2


class PerThreadTransport(httpx2.BaseTransport):
    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        # One context for every pool: building one loads the CA store (~20 ms, ~1 MB).
        self._ssl_context = ssl_context or httpx2.create_ssl_context()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._transports: list[httpx2.HTTPTransport] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        return self._transport().handle_request(request)

    def close(self) -> None:
        with self._lock:
            transports, self._transports = self._transports, []
        for transport in transports:
            transport.close()

    def pools(self) -> int:
        """How many threads have a pool (for tests and diagnostics)."""
        with self._lock:
            return len(self._transports)

    def _transport(self) -> httpx2.HTTPTransport:
        transport: httpx2.HTTPTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = httpx2.HTTPTransport(
                verify=self._ssl_context,
                limits=httpx2.Limits(
                    max_connections=CONNECTIONS_PER_THREAD,
                    max_keepalive_connections=CONNECTIONS_PER_THREAD,
                ),
            )
            self._local.transport = transport
            with self._lock:
                self._transports.append(transport)
        return transport
