"""The events dispatcher's wake-up: LISTEN on the channels the triggers of migration
0006 notify (``visualization_done``, ``intake_done``) and on the replay's, on a
connection of its own to the direct URL (LISTEN belongs to a session: never through a
transaction pooler).

Only a nudge: what to deliver is read from the outbox, so a notification missed while
the connection was down costs latency (the dispatcher's poll), never an event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from db.engine import connect
from db.errors import first_line
from db.repositories.events import REPLAYED
from domain.errors import DatabaseUnavailableError

COMPLETION_CHANNELS = ("visualization_done", "intake_done", REPLAYED)


class CompletionWakeUps:
    """A LISTEN connection opened on first use and again after it broke."""

    def __init__(self, url: str, channels: Sequence[str] = COMPLETION_CHANNELS) -> None:
        self._url = url
        self._channels = tuple(channels)
        self._connection: psycopg.Connection[Any] | None = None

    def wait(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for a notification; the number received (all
        those already queued are taken at once). DatabaseUnavailableError if the
        connection cannot be opened or broke (the next call opens a new one)."""
        try:
            connection = self._connect()
            received = 0
            for _ in connection.notifies(timeout=max(timeout, 0.0), stop_after=1):
                received += 1
            if received:  # take what else is queued without waiting
                for _ in connection.notifies(timeout=0.0):
                    received += 1
            return received
        except psycopg.Error as exc:
            self.close()
            raise DatabaseUnavailableError(f"event wake-ups: {first_line(exc)}") from exc

    def _connect(self) -> psycopg.Connection[Any]:
        if self._connection is None or self._connection.closed:
            connection = connect(self._url, autocommit=True)
            for channel in self._channels:
                connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self._connection = connection
        return self._connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(psycopg.Error):
                connection.close()
