"""LISTEN on a PostgreSQL channel, for a process that waits for announcements (the
demo's scripted respondent waits for intake questions, as the API service would).

A dedicated autocommit connection, outside any unit of work: a notification is
delivered between transactions, and only once the notifying one has committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from db.engine import connect


class Listener:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._connection = connection

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The next notification's payload (our notifications carry JSON objects,
        IntakeRepository.notify), or None when none came within ``timeout`` seconds."""
        for notice in self._connection.notifies(timeout=timeout, stop_after=1):
            payload: dict[str, Any] = json.loads(notice.payload)
            return payload
        return None


@contextmanager
def listen(url: str, channel: str) -> Iterator[Listener]:
    """Listen on ``channel`` of the database at ``url`` until the block ends. LISTEN
    belongs to a session: ``url`` is the direct one (DATABASE_DIRECT_URL), never a
    transaction pooler's, which would hand the session to other clients."""
    with connect(url, autocommit=True) as connection:
        connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield Listener(connection)
