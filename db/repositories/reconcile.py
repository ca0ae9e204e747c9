"""The reconciler's statements, and the dispatch record every published entry.created
leaves on its row.

Written for ten million entries and many machines: every read is driven by a partial
index over the unfinished rows only (``idx_visualizations_pending_dispatch``, the
status index for the few processing rows, ``idx_entry_arrivals_arrived_at``), bounded
by a limit, and one reconcile runs at a time (a transaction-level advisory lock).

``dispatched_at`` on a row is when a message for it last left (or when its retry is
due): a pending row is republished only once that is older than the grace window and
older than the oldest message still queued (a FIFO queue still holds every message sent
after its head). So a backlog behind a quota is never republished, and a lost message
is republished once per grace window at most.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

LANE_FRESH, LANE_LOW = 0, 1

# Any 64-bit key no other lock of ours uses: "emotionviz reconcile".
RECONCILE_LOCK_KEY = 0x656D6F7669737263

# Entries that arrived longer than the grace ago and still have no row get one, pending,
# dispatched "when they arrived" (their message, if any, left then); arrivals whose row
# exists are simply dropped (the claim drops most of them itself).
ADOPT_ARRIVALS = """
WITH oldest AS (
    SELECT entry_id FROM entry_arrivals
    WHERE arrived_at < now() - make_interval(secs => :grace)
    ORDER BY arrived_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), due AS (  -- = ANY(ARRAY(...)): probes the key (a join here chose a seq scan)
    DELETE FROM entry_arrivals a
    WHERE a.entry_id = ANY(ARRAY(SELECT entry_id FROM oldest))
    RETURNING a.entry_id, a.user_id, a.arrived_at
)
INSERT INTO visualizations (entry_id, user_id, dispatched_at)
SELECT due.entry_id, due.user_id, due.arrived_at FROM due
ON CONFLICT (entry_id) DO NOTHING
RETURNING entry_id
"""

# Pending rows whose last message left before ``sent_before`` (the grace window, and the
# oldest message still queued).
DUE_PENDING = """
SELECT entry_id, user_id, style FROM visualizations
WHERE status = 'pending' AND dispatched_at < :sent_before
ORDER BY dispatched_at
LIMIT :limit
"""

# After a Redis failover (issue 22.1): pending rows whose message left in a window before
# it (the old primary may have taken it to its grave), whatever the grace. A keyset walk:
# each batch starts after the last row of the one before, (dispatched_at, entry_id), so
# a pass never reads a row twice whatever a republish does to its dispatch time.
DUE_PENDING_BETWEEN = """
SELECT entry_id, user_id, style, dispatched_at FROM visualizations
WHERE status = 'pending' AND dispatched_at >= :after_at AND dispatched_at < :before
  AND (dispatched_at, entry_id) > (:after_at, :after_id)
ORDER BY dispatched_at, entry_id
LIMIT :limit
"""

# The failover's republishes are recorded as dispatched no earlier than the window's end
# (a few seconds ahead at most): another pass for the same failover (a retry, a second
# process) leaves them alone. Pending rows only: a claimed row's lease is its own clock.
MARK_DISPATCHED_FROM = """
UPDATE visualizations SET dispatched_at = :at
WHERE entry_id = ANY(:ids) AND status = 'pending' AND dispatched_at < :at
"""

# Processing rows whose lease ran out (the worker died or hangs) and that were not
# republished since, or not within the grace window.
DUE_STUCK = """
SELECT entry_id, user_id, style FROM visualizations
WHERE status = 'processing'
  AND coalesce(lease_expires_at, processing_started_at) < now()
  AND (dispatched_at < coalesce(lease_expires_at, processing_started_at)
       OR dispatched_at < now() - make_interval(secs => :grace))
  AND dispatched_at < :sent_before
ORDER BY coalesce(lease_expires_at, processing_started_at)
LIMIT :limit
"""

# The dispatch record (psycopg's own placeholders: it runs on the unit's DBAPI
# connection, whichever mode the unit is in). Existing unfinished rows note the time
# and, while pending, a requested style; entries without a row get a pending one, for
# their owner only. Their arrivals are done with.
RECORD_EXISTING = """
UPDATE visualizations AS v
SET dispatched_at = now(),
    style = CASE WHEN v.status = 'pending' THEN coalesce(m.style, v.style) ELSE v.style END
FROM unnest(%(entry_ids)s::uuid[], %(user_ids)s::uuid[], %(styles)s::text[])
     AS m(entry_id, user_id, style)
WHERE v.entry_id = m.entry_id AND v.user_id = m.user_id
  AND v.status IN ('pending', 'processing')
RETURNING v.entry_id, v.user_id
"""

RECORD_NEW = """
INSERT INTO visualizations (entry_id, user_id, style, dispatched_at)
SELECT e.id, e.user_id, coalesce(m.style, 'abstract'), now()
FROM unnest(%(entry_ids)s::uuid[], %(user_ids)s::uuid[], %(styles)s::text[])
     AS m(entry_id, user_id, style)
JOIN emotion_entries e ON e.id = m.entry_id AND e.user_id = m.user_id
WHERE NOT EXISTS (SELECT 1 FROM visualizations v WHERE v.entry_id = m.entry_id)
ON CONFLICT (entry_id) DO NOTHING
RETURNING entry_id, user_id
"""

# The fair pool (migration 0008): each dispatched row's message becomes a token that
# takes the fairest waiting entry. A first dispatch is fresh (lane 0, its person joins
# the ring first: their fair_turns row is held while their pool rows change, in user
# order so that two publishers never wait on each other); a republish of an existing
# row (the reconciler, a replay) is the low lane (1), taken after every fresh entry.
POOL_PEOPLE = """
INSERT INTO fair_turns AS t (user_id)
SELECT DISTINCT u FROM unnest(%(user_ids)s::uuid[]) AS p(u) ORDER BY u
ON CONFLICT (user_id) DO UPDATE SET turn_at = t.turn_at
"""

POOL_ENTRIES = """
INSERT INTO fair_waiting (entry_id, user_id, lane)
SELECT * FROM unnest(%(entry_ids)s::uuid[], %(user_ids)s::uuid[], %(lanes)s::int[])
ON CONFLICT (entry_id) DO NOTHING
"""

DROP_ARRIVALS = """
DELETE FROM entry_arrivals a USING unnest(%(entry_ids)s::uuid[]) AS m(entry_id)
WHERE a.entry_id = m.entry_id
"""


# Where a failover's keyset walk stands: the last row's (dispatched_at, entry_id).
WindowCursor = tuple[datetime, uuid.UUID]


@dataclass(frozen=True)
class DueEntry:
    entry_id: uuid.UUID
    user_id: uuid.UUID
    style: str


@dataclass(frozen=True)
class Dispatch:
    """An entry.created about to be published: recorded on its row in the same
    transaction (``record_dispatches``)."""

    entry_id: uuid.UUID
    user_id: uuid.UUID
    style: str | None


def record_dispatches(conn: Any, dispatches: Sequence[Dispatch]) -> None:
    """Note on each row that its message leaves now, with the requested style (so a
    republish keeps it, even when this publish fails). ``conn`` is the unit's psycopg
    connection, inside its transaction."""
    if not dispatches:
        return
    params = {
        "entry_ids": [d.entry_id for d in dispatches],
        "user_ids": [d.user_id for d in dispatches],
        "styles": [d.style for d in dispatches],
    }
    with conn.cursor() as cursor:
        cursor.execute(RECORD_EXISTING, params)
        pooled = [(e, u, LANE_LOW) for e, u in cursor.fetchall()]
        if len(pooled) < len(dispatches):
            cursor.execute(RECORD_NEW, params)
            fresh = [(e, u, LANE_FRESH) for e, u in cursor.fetchall()]
            cursor.execute(DROP_ARRIVALS, params)
            if fresh:
                cursor.execute(POOL_PEOPLE, {"user_ids": [u for _, u, _ in fresh]})
            pooled += fresh
        if pooled:
            # In publish order (RETURNING follows the plan's join, not the array): the
            # pool's seq is that order, and a person's oldest entry is taken first.
            order = {d.entry_id: i for i, d in enumerate(dispatches)}
            pooled.sort(key=lambda row: order.get(row[0], len(order)))
            cursor.execute(
                POOL_ENTRIES,
                {
                    "entry_ids": [e for e, _, _ in pooled],
                    "user_ids": [u for _, u, _ in pooled],
                    "lanes": [lane for _, _, lane in pooled],
                },
            )


class ReconcileRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def try_lock(self) -> bool:
        """The reconcile lock, held until this transaction ends; False if another
        reconcile (on any machine) holds it."""
        return bool(
            self.session.scalar(
                text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": RECONCILE_LOCK_KEY}
            )
        )

    def adopt_arrivals(self, grace_s: int, limit: int) -> int:
        """Give a pending row to entries that arrived more than ``grace_s`` ago and still
        have none (their message was lost, or never sent); returns how many."""
        rows = self.session.execute(text(ADOPT_ARRIVALS), {"grace": grace_s, "limit": limit})
        return len(rows.all())

    def due_pending(self, sent_before: datetime, limit: int) -> list[DueEntry]:
        rows = self.session.execute(text(DUE_PENDING), {"sent_before": sent_before, "limit": limit})
        return [DueEntry(r.entry_id, r.user_id, r.style) for r in rows]

    def due_pending_between(
        self, since: datetime, before: datetime, limit: int, after: WindowCursor | None = None
    ) -> tuple[list[DueEntry], WindowCursor | None]:
        """Pending rows dispatched in [since, before) (a failover's window), in
        (dispatched_at, entry_id) order from just after ``after``; with the cursor to
        pass for the next batch (``after`` again when this one is empty)."""
        at, entry_id = after or (since, uuid.UUID(int=0))
        rows = self.session.execute(
            text(DUE_PENDING_BETWEEN),
            {"after_at": at, "after_id": entry_id, "before": before, "limit": limit},
        ).all()
        due = [DueEntry(r.entry_id, r.user_id, r.style) for r in rows]
        return due, ((rows[-1].dispatched_at, rows[-1].entry_id) if rows else after)

    def mark_dispatched_from(self, entry_ids: Sequence[uuid.UUID], at: datetime) -> None:
        """Record pending rows as dispatched at ``at`` at the earliest (a failover's
        republishes: MARK_DISPATCHED_FROM)."""
        if entry_ids:
            self.session.execute(text(MARK_DISPATCHED_FROM), {"ids": list(entry_ids), "at": at})

    def due_stuck(
        self, grace_s: int, limit: int, sent_before: datetime | None = None
    ) -> list[DueEntry]:
        """``sent_before``: leave rows dispatched since (this pass's own republishes)."""
        bound = sent_before or datetime.max.replace(tzinfo=UTC)
        rows = self.session.execute(
            text(DUE_STUCK), {"grace": grace_s, "limit": limit, "sent_before": bound}
        )
        return [DueEntry(r.entry_id, r.user_id, r.style) for r in rows]

    def database_now(self) -> datetime:
        return self.session.scalar(text("SELECT now()"))  # type: ignore[no-any-return]
