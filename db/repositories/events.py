"""The completion events' outbox (migration 0006): the triggers write ``completion_events``;
here the dispatcher gives each event to the configured subscribers (one
``event_deliveries`` row each), claims due deliveries, and records how each went; the
operator lists and replays them.

A claim is a lease, not a lock held across the delivery: the claiming transaction
commits before any HTTP call or publish (workers/services/events.py), moving the row's
``next_attempt_at`` past the delivery's time limit. A dispatcher that dies mid-delivery
leaves the row to be claimed again when that passes (at least once; receivers dedupe on
the event id). An outcome is recorded only by the claim that still holds the row (the
same ``attempts``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from db.uow import UnitOfWork

# The replay's wake-up for the dispatchers (no payload: not for subscribers).
REPLAYED = "completion_events_replayed"

# Events not yet given to the subscribers get one delivery row per subscriber.
_FAN_OUT = text(
    """
WITH fresh AS (
    UPDATE completion_events SET fanned_out_at = now()
    WHERE id IN (SELECT id FROM completion_events WHERE fanned_out_at IS NULL
                 ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED)
    RETURNING id
), made AS (
    INSERT INTO event_deliveries (event_id, subscriber)
    SELECT f.id, s.name FROM fresh f CROSS JOIN unnest(CAST(:subscribers AS text[])) AS s(name)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM made)
"""
)

# Due deliveries, oldest due first; rows another dispatcher holds are skipped.
_CLAIM = text(
    """
UPDATE event_deliveries d
SET attempts = d.attempts + 1,
    next_attempt_at = clock_timestamp() + make_interval(secs => :lease_s)
FROM (SELECT event_id, subscriber FROM event_deliveries
      WHERE status = 'pending' AND next_attempt_at <= now()
        AND subscriber = ANY(CAST(:subscribers AS text[]))
      ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED) due,
     completion_events e
WHERE d.event_id = due.event_id AND d.subscriber = due.subscriber AND e.id = d.event_id
RETURNING d.event_id, d.subscriber, d.attempts, e.event_id, e.kind, e.payload, e.created_at
"""
)

_NEXT_DUE = text(
    "SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp()) "
    "FROM event_deliveries WHERE status = 'pending' "
    "AND subscriber = ANY(CAST(:subscribers AS text[]))"
)

_HELD = (
    "WHERE event_id = :id AND subscriber = :subscriber AND attempts = :attempts "
    "AND status = 'pending'"
)
_DELIVERED = text(
    "UPDATE event_deliveries SET status = 'delivered', delivered_at = now(), "
    f"last_error = NULL {_HELD}"
)
_RETRY = text(
    "UPDATE event_deliveries SET last_error = :reason, "
    f"next_attempt_at = clock_timestamp() + make_interval(secs => :delay_s) {_HELD}"
)
_DEAD = text(f"UPDATE event_deliveries SET status = 'dead', last_error = :reason {_HELD}")

_PURGE = text(
    "DELETE FROM completion_events WHERE id IN (SELECT id FROM completion_events "
    "WHERE created_at < now() - make_interval(secs => :age_s) ORDER BY id LIMIT :limit)"
)

_LIST = """
SELECT e.event_id, e.kind, e.payload, e.created_at, d.subscriber, d.status, d.attempts,
       d.next_attempt_at, d.last_error, d.delivered_at
FROM event_deliveries d JOIN completion_events e ON e.id = d.event_id
{where}
ORDER BY e.id DESC, d.subscriber LIMIT :limit
"""


@dataclass(frozen=True)
class ClaimedDelivery:
    """One event to send to one subscriber, held by this claim (``attempts``)."""

    row_id: int
    subscriber: str
    attempts: int  # this attempt's number, from 1
    event_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    event_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    created_at: datetime
    subscriber: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None


class EventRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- the dispatcher --------------------------------------------------------------

    def fan_out(self, subscribers: Sequence[str], limit: int) -> int:
        """Give up to ``limit`` new events to ``subscribers``; the number of events."""
        row = self.session.execute(
            _FAN_OUT, {"subscribers": list(subscribers), "limit": limit}
        ).one()
        return int(row[0])

    def claim(
        self, subscribers: Sequence[str], limit: int, lease_s: float
    ) -> list[ClaimedDelivery]:
        rows = self.session.execute(
            _CLAIM, {"subscribers": list(subscribers), "limit": limit, "lease_s": lease_s}
        )
        claimed = [ClaimedDelivery(*row) for row in rows]
        claimed.sort(key=lambda c: (c.row_id, c.subscriber))  # RETURNING keeps no order
        return claimed

    def seconds_to_next_due(self, subscribers: Sequence[str]) -> float | None:
        """Until the earliest pending delivery is due (<= 0: now); None if none waits."""
        value = self.session.execute(
            _NEXT_DUE, {"subscribers": list(subscribers)}
        ).scalar_one_or_none()
        return None if value is None else float(value)

    def _held(self, claim: ClaimedDelivery) -> dict[str, Any]:
        return {"id": claim.row_id, "subscriber": claim.subscriber, "attempts": claim.attempts}

    def delivered(self, claim: ClaimedDelivery) -> bool:
        result = self.session.execute(_DELIVERED, self._held(claim))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def retry(self, claim: ClaimedDelivery, delay_s: float, reason: str) -> bool:
        params = {**self._held(claim), "delay_s": delay_s, "reason": reason[:1000]}
        result = self.session.execute(_RETRY, params)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def dead(self, claim: ClaimedDelivery, reason: str) -> bool:
        result = self.session.execute(_DEAD, {**self._held(claim), "reason": reason[:1000]})
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def purge(self, older_than_s: float, limit: int) -> int:
        """Delete up to ``limit`` events older than ``older_than_s`` (their deliveries
        go with them); the number deleted."""
        result = self.session.execute(_PURGE, {"age_s": older_than_s, "limit": limit})
        return int(result.rowcount)  # type: ignore[attr-defined]

    # --- the operator -------------------------------------------------------------------

    def deliveries(
        self,
        *,
        status: str | None = None,
        event_ids: Sequence[uuid.UUID] = (),
        limit: int = 50,
    ) -> list[DeliveryRow]:
        """Deliveries, newest event first: those in ``status``, or of ``event_ids``."""
        clauses, params = [], {"limit": limit}
        if status is not None:
            clauses.append("d.status = :status")
            params["status"] = status  # type: ignore[assignment]
        if event_ids:
            clauses.append("e.event_id = ANY(CAST(:ids AS uuid[]))")
            params["ids"] = [str(i) for i in event_ids]  # type: ignore[assignment]
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.session.execute(text(_LIST.format(where=where)), params)
        return [DeliveryRow(*row) for row in rows]

    def status_counts(self) -> dict[str, int]:
        rows = self.session.execute(
            text("SELECT status, count(*) FROM event_deliveries GROUP BY status")
        )
        counts = {"pending": 0, "delivered": 0, "dead": 0}
        counts.update({str(s): int(n) for s, n in rows})
        return counts

    def replay(self, *, event_ids: Sequence[uuid.UUID] = (), subscriber: str | None = None) -> int:
        """Send again: the dead deliveries (all, or those of ``event_ids``, whatever
        their state), from a fresh count of attempts; the number of deliveries."""
        clauses = ["d.event_id = e.id"]
        params: dict[str, Any] = {}
        if event_ids:
            clauses.append("e.event_id = ANY(CAST(:ids AS uuid[]))")
            params["ids"] = [str(i) for i in event_ids]
        else:
            clauses.append("d.status = 'dead'")
        if subscriber is not None:
            clauses.append("d.subscriber = :subscriber")
            params["subscriber"] = subscriber
        result = self.session.execute(
            text(
                "UPDATE event_deliveries d SET status = 'pending', attempts = 0, "
                "next_attempt_at = now(), delivered_at = NULL "
                f"FROM completion_events e WHERE {' AND '.join(clauses)}"
            ),
            params,
        )
        # Wake the dispatchers at commit (they listen here too, db/event_listener.py).
        self.session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": REPLAYED})
        return int(result.rowcount)  # type: ignore[attr-defined]

    def unknown_events(self, event_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Those of ``event_ids`` that name no stored event."""
        if not event_ids:
            return []
        found = set(
            self.session.execute(
                text(
                    "SELECT event_id FROM completion_events "
                    "WHERE event_id = ANY(CAST(:ids AS uuid[]))"
                ),
                {"ids": [str(i) for i in event_ids]},
            ).scalars()
        )
        return [i for i in event_ids if i not in found]


def event_repository(uow: UnitOfWork) -> EventRepository:
    """The outbox's repository on ``uow``'s Session (what a ``uow.events`` property
    would give; db/uow.py is the per-entry path's, left alone by this change)."""
    return EventRepository(uow.session)
