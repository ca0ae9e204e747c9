"""The completion events' outbox (migration 0006): the triggers write ``completion_events``;
here the dispatcher gives each event to the configured subscribers (one
``event_deliveries`` row each), claims due deliveries, and records how each went; the
operator lists and replays them.

A claim is a lease, not a lock held across the delivery: the claiming transaction
commits before any HTTP call or publish (workers/services/events.py), moving the row's
``next_attempt_at`` past the delivery's time limit. A dispatcher that dies mid-delivery
leaves the row to be claimed again when that passes (at least once; receivers dedupe on
the event id). An outcome is recorded only by the claim that still holds the row (the
same ``claim`` token, which a replay clears).
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

# A subscriber seen for the first time starts from the events of the last
# ``window_s`` (those a rolling deploy that adds it may have let others see first). The
# NOT EXISTS spares every later pass the read of that starting point.
_REGISTER = text(
    """
INSERT INTO event_subscribers (name, fanned_out_id)
SELECT s.name, coalesce((SELECT max(id) FROM completion_events
                         WHERE created_at <= now() - make_interval(secs => :window_s)), 0)
FROM unnest(CAST(:subscribers AS text[])) AS s(name)
WHERE NOT EXISTS (SELECT 1 FROM event_subscribers t WHERE t.name = s.name)
ON CONFLICT DO NOTHING
"""
)

# Per subscriber: the events past its high-water mark get a delivery row each, and the
# mark moves to the last of them. The subscriber's row is locked (SKIP LOCKED: another
# dispatcher of the same subscriber is at it); dispatchers of other subscribers fan
# out the same events for theirs.
_FAN_OUT = text(
    """
WITH sub AS (
    SELECT name, fanned_out_id FROM event_subscribers
    WHERE name = ANY(CAST(:subscribers AS text[])) FOR UPDATE SKIP LOCKED
), fresh AS (
    SELECT s.name, e.id FROM sub s
    CROSS JOIN LATERAL (SELECT id FROM completion_events WHERE id > s.fanned_out_id
                        ORDER BY id LIMIT :limit) e
), made AS (
    INSERT INTO event_deliveries (event_id, subscriber) SELECT id, name FROM fresh
    ON CONFLICT DO NOTHING
    RETURNING 1
), moved AS (
    UPDATE event_subscribers t SET fanned_out_id = f.top
    FROM (SELECT name, max(id) AS top FROM fresh GROUP BY name) f
    WHERE t.name = f.name
    RETURNING 1
)
SELECT (SELECT count(*) FROM made), (SELECT count(*) FROM moved)
"""
)

# Identity values are taken in order but committed in any: an event at or below a mark
# may commit after the mark passed it. The sweep gives such late events of the last
# ``window_s`` their missing rows.
_SWEEP = text(
    """
INSERT INTO event_deliveries (event_id, subscriber)
SELECT e.id, s.name
FROM event_subscribers s
JOIN completion_events e ON e.id <= s.fanned_out_id
WHERE s.name = ANY(CAST(:subscribers AS text[]))
  AND e.created_at > now() - make_interval(secs => :window_s)
  AND NOT EXISTS (SELECT 1 FROM event_deliveries d
                  WHERE d.event_id = e.id AND d.subscriber = s.name)
ON CONFLICT DO NOTHING
"""
)

# Due deliveries, oldest due first; rows another dispatcher holds are skipped. Each
# claim gets a token of its own: only it may record the outcome.
_CLAIM = text(
    """
UPDATE event_deliveries d
SET attempts = d.attempts + 1,
    claim = gen_random_uuid(),
    next_attempt_at = clock_timestamp() + make_interval(secs => :lease_s)
FROM (SELECT event_id, subscriber FROM event_deliveries
      WHERE status = 'pending' AND next_attempt_at <= now()
        AND subscriber = ANY(CAST(:subscribers AS text[]))
      ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED) due,
     completion_events e
WHERE d.event_id = due.event_id AND d.subscriber = due.subscriber AND e.id = d.event_id
RETURNING d.event_id, d.subscriber, d.attempts, d.claim, e.event_id, e.kind, e.payload,
          e.created_at
"""
)

_NEXT_DUE = text(
    "SELECT extract(epoch FROM min(next_attempt_at) - clock_timestamp()) "
    "FROM event_deliveries WHERE status = 'pending' "
    "AND subscriber = ANY(CAST(:subscribers AS text[]))"
)

_HELD = (
    "WHERE event_id = :id AND subscriber = :subscriber AND claim = :claim AND status = 'pending'"
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
# A claim not sent (its pass ran out of lease, or the process stops): due again now,
# the attempt not counted.
_RELEASE = text(
    "UPDATE event_deliveries SET attempts = attempts - 1, claim = NULL, "
    f"next_attempt_at = now() {_HELD}"
)

# The old events go with their deliveries; those never delivered are counted first.
_PURGE = text(
    """
WITH old AS (
    SELECT id FROM completion_events
    WHERE created_at < now() - make_interval(secs => :age_s) ORDER BY id LIMIT :limit
), undelivered AS (
    SELECT count(*) FILTER (WHERE d.status = 'pending') AS pending,
           count(*) FILTER (WHERE d.status = 'dead') AS dead
    FROM event_deliveries d WHERE d.event_id IN (SELECT id FROM old)
), gone AS (
    DELETE FROM completion_events WHERE id IN (SELECT id FROM old) RETURNING 1
)
SELECT (SELECT count(*) FROM gone), u.pending, u.dead FROM undelivered u
"""
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
    """One event to send to one subscriber, held by this claim (``claim``)."""

    row_id: int
    subscriber: str
    attempts: int  # this attempt's number, from 1
    claim: uuid.UUID
    event_id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class Purged:
    events: int
    pending: int  # deliveries deleted before they were delivered
    dead: int


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

    def fan_out(self, subscribers: Sequence[str], limit: int, window_s: float) -> int:
        """Give each of ``subscribers`` (not held by another dispatcher) up to ``limit``
        events past its mark; the number of delivery rows made."""
        params = {"subscribers": list(subscribers), "window_s": window_s}
        self.session.execute(_REGISTER, params)
        row = self.session.execute(_FAN_OUT, {**params, "limit": limit}).one()
        return int(row[0])

    def sweep(self, subscribers: Sequence[str], window_s: float) -> int:
        """Delivery rows for the events of the last ``window_s`` that committed after
        their subscriber's mark passed them; the number made."""
        result = self.session.execute(
            _SWEEP, {"subscribers": list(subscribers), "window_s": window_s}
        )
        return int(result.rowcount)  # type: ignore[attr-defined]

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
        return {"id": claim.row_id, "subscriber": claim.subscriber, "claim": claim.claim}

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

    def release(self, claim: ClaimedDelivery) -> bool:
        """Give back a claim not sent: due now, its attempt not counted."""
        result = self.session.execute(_RELEASE, self._held(claim))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def purge(self, older_than_s: float, limit: int) -> Purged:
        """Delete up to ``limit`` events older than ``older_than_s`` (their deliveries
        go with them); how many, and how many of their deliveries never arrived."""
        row = self.session.execute(_PURGE, {"age_s": older_than_s, "limit": limit}).one()
        return Purged(int(row[0]), int(row[1]), int(row[2]))

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

    def undelivered_counts(self) -> dict[str, int]:
        """Deliveries pending and dead (each count read through its partial index: the
        delivered rows, most of the table, are not read); for the metrics."""
        row = self.session.execute(
            text(
                "SELECT (SELECT count(*) FROM event_deliveries WHERE status = 'pending'), "
                "(SELECT count(*) FROM event_deliveries WHERE status = 'dead')"
            )
        ).one()
        return {"pending": int(row[0]), "dead": int(row[1])}

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
                # A fresh count of attempts, and no claim: an outcome still on its way
                # from before the replay is not recorded (the claim is the lease's
                # token, attempts only a count).
                "UPDATE event_deliveries d SET status = 'pending', attempts = 0, "
                "claim = NULL, next_attempt_at = now(), delivered_at = NULL "
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
