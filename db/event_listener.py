"""The events dispatcher's wake-up: LISTEN on the channels the triggers of migration
0006 notify (``visualization_done``, ``intake_done``) and on the replay's, on a
connection of its own to the direct URL (LISTEN belongs to a session: never through a
transaction pooler).

Only a nudge: what to deliver is read from the outbox, so a notification missed while
the connection was down costs latency (the dispatcher's poll), never an event. A broken
or unreachable listener is therefore not an outage: ``wait`` then just sleeps, and the
connection is tried again after a backoff (1 s doubling to 30 s); ``listening`` and
``problem`` say how it stands, for the caller to log the change once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from db.engine import connect
from db.errors import first_line
from db.repositories.events import REPLAYED

COMPLETION_CHANNELS = ("visualization_done", "intake_done", REPLAYED)

# How often a wait looks at the stop event (shutdown waits at most this long for it).
SLICE_S = 0.25
MIN_RETRY_S = 1.0
MAX_RETRY_S = 30.0


class CompletionWakeUps:
    """A LISTEN connection opened on first use and again (after a backoff) after it
    broke. Used by one thread."""

    def __init__(
        self,
        url: str,
        channels: Sequence[str] = COMPLETION_CHANNELS,
        *,
        connect_timeout_s: int = 5,
    ) -> None:
        self._url = url
        self._channels = tuple(channels)
        # A blackholed host must not hold the thread for the OS's ~2 min TCP timeout,
        # and a connection whose peer vanished must be noticed (keepalives).
        self._connect_options: dict[str, Any] = {
            "connect_timeout": max(2, int(connect_timeout_s)),  # libpq's floor is 2 s
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        self._connection: psycopg.Connection[Any] | None = None
        self._retry_at = 0.0
        self._retry_s = MIN_RETRY_S
        self.listening = False
        self.problem: str | None = None  # why not listening (safe to log: first line)

    def wait(self, timeout: float, stop: threading.Event | None = None) -> int:
        """Wait up to ``timeout`` seconds for a notification, or until ``stop`` is set;
        the number received (all those already queued are taken at once). Never raises
        for a connection problem: without a connection it sleeps the ``timeout``."""
        stop = stop or threading.Event()
        deadline = time.monotonic() + max(timeout, 0.0)
        connection = self._ensure()
        if connection is None:
            stop.wait(max(deadline - time.monotonic(), 0.0))
            return 0
        try:
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return 0
                received = 0
                for _ in connection.notifies(timeout=min(left, SLICE_S), stop_after=1):
                    received += 1
                if received:  # take what else is queued without waiting
                    for _ in connection.notifies(timeout=0.0):
                        received += 1
                    return received
            return 0
        except psycopg.Error as exc:
            self._lost(exc)
            stop.wait(max(deadline - time.monotonic(), 0.0))
            return 0

    def _ensure(self) -> psycopg.Connection[Any] | None:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        if time.monotonic() < self._retry_at:
            return None
        try:
            connection = connect(self._url, autocommit=True, **self._connect_options)
            try:
                for channel in self._channels:
                    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            except psycopg.Error:
                connection.close()
                raise
        except psycopg.Error as exc:
            self._lost(exc)
            return None
        self._connection = connection
        self._retry_s = MIN_RETRY_S
        self.listening, self.problem = True, None
        return connection

    def _lost(self, exc: psycopg.Error) -> None:
        self.close()
        self.listening, self.problem = False, first_line(exc)[:200]
        self._retry_at = time.monotonic() + self._retry_s
        self._retry_s = min(self._retry_s * 2, MAX_RETRY_S)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                connection.close()
