"""The per-entry path's statements (claim, analysis checkpoint, completion), on the
pooled connection as psycopg's own (``uow.entry_pipeline``, db/uow.py).

Every entry runs these three units, so their cost is per entry: through SQLAlchemy's
Session each cost ~0.35 ms of CPU before the statement itself; here the statements are
plain SQL, built once. Writes under a lease are compare-and-set on (id, status
'processing', processing_started_at), as in VisualizationRepository.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from db.repositories.entries import EntryRow
from db.repositories.ledger import RIDING_ROWS_CTE, riding_rows
from db.repositories.visualizations import DEFAULT_STYLE, ClaimedVisualization
from domain.analysis import EntrySnapshot
from domain.ledger import PaidCall

# A live job of a person: processing under a lease that has not run out.
_LIVE = "status = 'processing' AND coalesce(lease_expires_at, processing_started_at) >= now()"
# The advisory locks of the cap (migration 0008's LOCK_SPACE): one claim per person.
_CAP_LOCK_SPACE = 0x46414952

# One round trip: read the entry, create the row if upstream did not, and take the lease
# (on a new row, a pending one, or one whose lease ran out). The entry comes back even
# when the claim does not (a duplicate, a held lease), so the caller can tell "missing",
# "someone else's" and "not claimable" apart. The arrival goes first (the InitPlan in
# the insert's WHERE runs it before the row is written): the reconciler's order, which
# locks the arrival and then inserts the row. What is claimed leaves the fair pool (a
# stale pool row keeps its person in the ring). ``cap`` > 0: the person's live jobs
# are counted under their advisory lock (as fair_claim), and the last column says
# whether the row was claimable when the cap held it back.
_CLAIM_ENTRY = f"""
WITH arrived AS (  -- the entry has a row now: the reconciler need not adopt it
    DELETE FROM entry_arrivals WHERE entry_id = %(entry_id)s AND user_id = %(user_id)s
    RETURNING 1
), entry AS (
    SELECT id, user_id, situation, emotions, intensity, notes, created_at
    FROM emotion_entries WHERE id = %(entry_id)s
), room AS (
    SELECT CASE WHEN %(cap)s <= 0 THEN true
           ELSE pg_try_advisory_xact_lock({_CAP_LOCK_SPACE}, hashtext(%(user_id)s::text))
                AND (SELECT count(*) FROM visualizations l
                     WHERE l.user_id = %(user_id)s AND {_LIVE}) < %(cap)s
           END AS ok
), claimed AS (
    INSERT INTO visualizations AS v
        (entry_id, user_id, style, status, processing_started_at, lease_expires_at,
         claim_count)
    SELECT id, user_id, %(style)s, 'processing', clock_timestamp(),
           clock_timestamp() + make_interval(secs => %(lease_s)s), 1
    FROM entry WHERE user_id = %(user_id)s AND (SELECT count(*) FROM arrived) >= 0
      AND (SELECT ok FROM room)
    ON CONFLICT (entry_id) DO UPDATE
        SET status = 'processing',
            processing_started_at = clock_timestamp(),
            lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s),
            claim_count = v.claim_count + 1
        WHERE v.status = 'pending'
           OR (v.status = 'processing'
               AND coalesce(v.lease_expires_at, v.processing_started_at) < now())
    RETURNING v.id, v.processing_started_at, v.style, v.gemini_analysis, v.image_url,
              v.claim_count, v.entry_id
), unpooled AS (
    DELETE FROM fair_waiting w WHERE w.entry_id = (SELECT entry_id FROM claimed)
)
SELECT e.id, e.user_id, e.situation, e.emotions, e.intensity, e.notes, e.created_at,
       c.id, c.processing_started_at, c.style, c.gemini_analysis, c.image_url, c.claim_count,
       CASE WHEN (SELECT ok FROM room) THEN false
            ELSE EXISTS (SELECT 1 FROM visualizations x WHERE x.entry_id = e.id
                         AND (x.status = 'pending'
                              OR (x.status = 'processing'
                                  AND coalesce(x.lease_expires_at, x.processing_started_at)
                                      < now())))
       END AS capped
FROM entry e LEFT JOIN claimed c ON true
"""

# A redraw (docs/operations.md, "Redraw") takes its own entry's row once it has an
# analysis: completed (the request), or pending / with a lapsed lease (the redraw's own
# retry after a release or a crash). The row keeps its style and picture until the
# completion replaces them; the new style comes back as the claim's.
_REDRAW_CLAIM = """
WITH entry AS (
    SELECT id, user_id, situation, emotions, intensity, notes, created_at
    FROM emotion_entries WHERE id = %(entry_id)s
), claimed AS (
    UPDATE visualizations AS v
    SET status = 'processing',
        processing_started_at = clock_timestamp(),
        lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s),
        claim_count = v.claim_count + 1
    FROM entry
    WHERE v.entry_id = entry.id AND entry.user_id = %(user_id)s
      AND v.gemini_analysis IS NOT NULL
      AND (v.status IN ('completed', 'pending')
           OR (v.status = 'processing'
               AND coalesce(v.lease_expires_at, v.processing_started_at) < now()))
    RETURNING v.id, v.processing_started_at, coalesce(%(style)s::text, v.style) AS new_style,
              v.gemini_analysis, v.image_url, v.claim_count, v.entry_id
), unpooled AS (  -- a redraw is never a token: a pool row of its entry is stale
    DELETE FROM fair_waiting w WHERE w.entry_id = (SELECT entry_id FROM claimed)
)
SELECT e.id, e.user_id, e.situation, e.emotions, e.intensity, e.notes, e.created_at,
       c.id, c.processing_started_at, c.new_style, c.gemini_analysis, c.image_url, c.claim_count
FROM entry e LEFT JOIN claimed c ON true
"""

# A low-lane entry (a crashed worker's row, a replay, an adopted arrival) that has waited
# this long goes before the fresh lane: lower, never starved by somebody's import
# (docs/reliability.md, "Fairness"). Longer than a claim's usual wait in the low lane
# when the fresh lane is empty, short against a lease.
LOW_LANE_AFTER_S = 10.0

# The fair claim (migration 0008: fair_claim): the fairest entry waiting in the pool,
# claimed in the same statement, with its entry (else the message's own entry). No row:
# nothing could be taken; ``_CLAIM_ENTRY`` then says why (a duplicate, a held lease). A
# row with no entry: the person is at the cap (``capped``).
_FAIR_CLAIM = """
SELECT e.id, e.user_id, e.situation, e.emotions, e.intensity, e.notes, e.created_at,
       f.f_id, f.f_lease, f.f_style, f.f_gemini_analysis, f.f_image_url, f.f_claim_count,
       f.f_capped
FROM fair_claim(%(entry_id)s, %(user_id)s, %(style)s, %(lease_s)s, %(cap)s,
                %(low_after_s)s) f
LEFT JOIN emotion_entries e ON e.id = f.f_entry_id
"""

# The analysis checkpoint, in one statement: the held ledger rows (RIDING_ROWS_CTE),
# the analysis saved under the lease, and (``yield_for``: the row's person) the yield.
# A job yields its thread between its steps (after the analysis, checkpointed) when
# another person has a fresh entry waiting and nothing running, and its own person has
# other jobs running: its row goes back to the pool, first of its person's entries, and
# the thread takes the waiting one (docs/reliability.md, "Fairness"). The person's ring
# row is held (SKIP LOCKED: no wait) so that the ring cannot drop them meanwhile. The
# save and the yield are one UPDATE of the row (a statement cannot change a row twice);
# the yield's conditions read the snapshot the save's lease check reads. The ledger
# rows come first (the InitPlan in the WHERE), in an erase's lock order.
_CHECKPOINT = f"""
WITH {RIDING_ROWS_CTE}, turn AS (
    SELECT %(yield_for)s::uuid IS NOT NULL
       AND EXISTS (SELECT 1 FROM fair_turns WHERE user_id = %(yield_for)s::uuid
                   FOR UPDATE SKIP LOCKED)
       AND EXISTS (
           SELECT 1 FROM fair_turns t
           WHERE t.user_id <> %(yield_for)s::uuid
             AND EXISTS (SELECT 1 FROM fair_waiting w
                         WHERE w.user_id = t.user_id AND w.lane = 0)
             AND NOT EXISTS (SELECT 1 FROM visualizations o
                             WHERE o.user_id = t.user_id AND {_LIVE}))
       AND (SELECT count(*) FROM visualizations m
            WHERE m.user_id = %(yield_for)s::uuid AND {_LIVE}) >= 2 AS go
), saved AS (
    UPDATE visualizations AS v
    SET summary = %(summary)s,
        insights = ARRAY(SELECT i.text FROM jsonb_array_elements_text(%(insights)s::jsonb)
                         WITH ORDINALITY AS i (text, n) ORDER BY i.n),
        visual_elements = %(visual_elements)s,
        gemini_analysis = %(raw)s,
        status = CASE WHEN t.go THEN 'pending' ELSE v.status END,
        processing_started_at = CASE WHEN t.go THEN NULL ELSE v.processing_started_at END,
        lease_expires_at = CASE WHEN t.go THEN NULL ELSE v.lease_expires_at END,
        claim_count = CASE WHEN t.go THEN greatest(v.claim_count - 1, 0) ELSE v.claim_count END,
        dispatched_at = CASE WHEN t.go THEN now() ELSE v.dispatched_at END
    FROM turn t
    WHERE v.id = %(id)s AND v.status = 'processing' AND v.processing_started_at = %(lease)s
      AND (SELECT count(*) FROM ledger) >= 0
    RETURNING v.entry_id, v.user_id, t.go AS yielded
), pooled AS (
    INSERT INTO fair_waiting (entry_id, user_id, lane, queued_at)
    SELECT entry_id, user_id, 0, '-infinity' FROM saved WHERE yielded
    ON CONFLICT (entry_id) DO NOTHING
)
SELECT count(*), coalesce(bool_or(yielded), false) FROM saved
"""

# The yield asked alone: a job whose analysis an earlier run checkpointed.
_YIELD_TURN = f"""
WITH ring AS (
    SELECT user_id FROM fair_turns WHERE user_id = %(user_id)s FOR UPDATE SKIP LOCKED
), released AS (
    UPDATE visualizations
    SET status = 'pending', processing_started_at = NULL, lease_expires_at = NULL,
        claim_count = greatest(claim_count - 1, 0), dispatched_at = now()
    WHERE id = %(id)s AND status = 'processing' AND processing_started_at = %(lease)s
      AND EXISTS (SELECT 1 FROM ring)
      AND EXISTS (
          SELECT 1 FROM fair_turns t
          WHERE t.user_id <> %(user_id)s
            AND EXISTS (SELECT 1 FROM fair_waiting w WHERE w.user_id = t.user_id AND w.lane = 0)
            AND NOT EXISTS (SELECT 1 FROM visualizations o WHERE o.user_id = t.user_id AND {_LIVE}))
      AND (SELECT count(*) FROM visualizations m WHERE m.user_id = %(user_id)s AND {_LIVE}) >= 2
    RETURNING entry_id, user_id
)
INSERT INTO fair_waiting (entry_id, user_id, lane, queued_at)
SELECT entry_id, user_id, 0, '-infinity' FROM released
ON CONFLICT (entry_id) DO NOTHING
"""

_HELD = "WHERE id = %(id)s AND status = 'processing' AND processing_started_at = %(lease)s"

# The picture's columns keep what a checkpoint saved when this run drew nothing (NULL),
# with the held ledger rows (RIDING_ROWS_CTE). A finished entry leaves the fair pool (a
# republish of a row still running may have pooled it); the count is the update's.
_COMPLETE = f"""
WITH {RIDING_ROWS_CTE}, done AS (
UPDATE visualizations
SET status = 'completed', processing_completed_at = now(), lease_expires_at = NULL,
    claim_count = 0, error_message = NULL, style = coalesce(%(style)s, style),
    image_url = coalesce(%(image_url)s, image_url),
    thumbnail_url = coalesce(%(thumbnail_url)s, thumbnail_url),
    nanobanana_response = coalesce(%(nanobanana_response)s, nanobanana_response)
{_HELD}
  AND (SELECT count(*) FROM ledger) >= 0  -- the held ledger rows first, as _CHECKPOINT
RETURNING entry_id
), unpooled AS (
    DELETE FROM fair_waiting w WHERE w.entry_id = (SELECT entry_id FROM done)
), refresh AS (  -- the person's analytics for the entry's day: the refresher's queue
    INSERT INTO analytics_refresh_queue (user_id, day)
    SELECT %(user_id)s, %(day)s FROM done
)
SELECT count(*) FROM done
"""

_UNPOOL = "DELETE FROM fair_waiting WHERE entry_id = %(entry_id)s"

# The lease heartbeat: every lease a process holds, extended in one statement, the
# (id, lease) pairs as two arrays. Through SQLAlchemy's ORM, a tuple IN of 256 pairs
# took ~0.25 s of the process's CPU to build each beat (with the GIL held: every job
# of the process stood still meanwhile); here it is one parameter each.
_RENEW_LEASES = """
UPDATE visualizations AS v
SET lease_expires_at = clock_timestamp() + make_interval(secs => %(lease_s)s), updated_at = now()
FROM unnest(%(ids)s::uuid[], %(leases)s::timestamptz[]) AS held (id, lease)
WHERE v.id = held.id AND v.processing_started_at = held.lease AND v.status = 'processing'
RETURNING v.id, v.processing_started_at
"""

# A suspect's claim is uncounted while it waits to run alone and counted again when it
# runs (workers/services/visualize.py): a crash is blamed only on the rows running.
_COUNT_CLAIM = f"""
UPDATE visualizations SET claim_count = greatest(claim_count + %(delta)s, 0)
{_HELD}
"""


@dataclass(frozen=True)
class AnalysisCheckpoint:
    """The checkpoint's write: ``saved`` False if the lease was taken over; ``yielded``
    True if the row went back to the pool in the same round trip (``yield_turn``)."""

    saved: bool
    yielded: bool


@dataclass(frozen=True)
class FairClaim:
    """What the fair claim took: an entry and its lease, or nothing (``capped``: the
    message's person is at the cap and its entry waits)."""

    taken: tuple[EntryRow, ClaimedVisualization] | None
    capped: bool


def _entry(row: Any) -> EntryRow:
    return EntryRow(
        snapshot=EntrySnapshot(
            entry_id=str(row[0]),
            situation=row[2],
            emotions=tuple(row[3]),
            intensity=row[4],
            notes=row[5],
        ),
        user_id=row[1],
        created_at=row[6],
    )


class EntryPipelineRepository:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def claim_entry(
        self, entry_id: uuid.UUID, user_id: uuid.UUID, style: str | None, lease_s: int
    ) -> tuple[EntryRow | None, ClaimedVisualization | None]:
        """The entry, and the lease on its visualization if it could be taken (the row
        is created first if missing, with ``style`` or the default). A row is only
        created or claimed for ``user_id``'s own entry."""
        entry, claim, _ = self.claim_own(entry_id, user_id, style, lease_s)
        return entry, claim

    def claim_own(
        self,
        entry_id: uuid.UUID,
        user_id: uuid.UUID,
        style: str | None,
        lease_s: int,
        max_in_flight: int = 0,
    ) -> tuple[EntryRow | None, ClaimedVisualization | None, bool]:
        """``claim_entry`` under the cap (``max_in_flight`` > 0: the person's live jobs
        counted under their advisory lock, as fair_claim); the last item: the row could
        be taken but the person is at the cap."""
        params = {
            "entry_id": entry_id,
            "user_id": user_id,
            "style": style or DEFAULT_STYLE,
            "lease_s": lease_s,
            "cap": max_in_flight,
        }
        row = self.conn.execute(_CLAIM_ENTRY, params).fetchone()
        if row is None:
            return None, None, False
        entry = _entry(row)
        if row[7] is None:
            return entry, None, bool(row[13])
        claim = ClaimedVisualization(row[7], row[8], row[9], row[10], row[11], row[12])
        return entry, claim, False

    def unpool(self, entry_id: uuid.UUID) -> None:
        """Take a finished entry out of the fair pool (by its key)."""
        self.conn.execute(_UNPOOL, {"entry_id": entry_id})

    def redraw_claim(
        self, entry_id: uuid.UUID, user_id: uuid.UUID, style: str | None, lease_s: int
    ) -> tuple[EntryRow | None, ClaimedVisualization | None]:
        """The entry, and the lease on its analysed row for a redraw in ``style`` (None:
        the row's; the claim's style, the row keeps its own until ``complete(style=)``)."""
        params = {"entry_id": entry_id, "user_id": user_id, "style": style, "lease_s": lease_s}
        row = self.conn.execute(_REDRAW_CLAIM, params).fetchone()
        if row is None:
            return None, None
        entry = _entry(row)
        if row[7] is None:
            return entry, None
        return entry, ClaimedVisualization(row[7], row[8], row[9], row[10], row[11], row[12])

    def fair_claim(
        self,
        entry_id: uuid.UUID,
        user_id: uuid.UUID,
        style: str | None,
        lease_s: int,
        max_in_flight: int,
        low_after_s: float = LOW_LANE_AFTER_S,
    ) -> FairClaim:
        """Claim the fairest entry waiting in the pool (maybe another person's), after
        enrolling the message's own entry if nothing pooled it (docs/reliability.md,
        "Fairness"), else the own entry. ``taken`` None: nothing could be taken
        (``claim_entry`` says why), or ``capped``: the person has ``max_in_flight``
        jobs running (0: no cap) and their entry waits. ``low_after_s``: a low-lane
        entry that has waited this long goes before the fresh lane."""
        params = {
            "entry_id": entry_id,
            "user_id": user_id,
            "style": style or DEFAULT_STYLE,
            "lease_s": lease_s,
            "cap": max_in_flight,
            "low_after_s": low_after_s,
        }
        row = self.conn.execute(_FAIR_CLAIM, params).fetchone()
        if row is None:
            return FairClaim(None, capped=False)
        if row[0] is None:
            return FairClaim(None, capped=bool(row[13]))
        return FairClaim((_entry(row), ClaimedVisualization(*row[7:13])), capped=False)

    def yield_turn(self, claim: ClaimedVisualization, user_id: uuid.UUID) -> bool:
        """Give the row back to the pool if another person waits with nothing running
        (and ``user_id`` has other jobs running); True if it was given back."""
        cursor = self.conn.execute(
            _YIELD_TURN, {"user_id": user_id, "id": claim.id, "lease": claim.lease}
        )
        return cursor.rowcount > 0

    def renew_leases(
        self, claims: Sequence[ClaimedVisualization], lease_s: int
    ) -> set[tuple[uuid.UUID, datetime]]:
        """Extend the leases this process still holds (its heartbeat); returns the (id,
        lease) of those renewed (a lease taken over meanwhile is not, nor a row whose
        job ended meanwhile)."""
        if not claims:
            return set()
        params = {
            "lease_s": lease_s,
            "ids": [c.id for c in claims],
            "leases": [c.lease for c in claims],
        }
        return {(row[0], row[1]) for row in self.conn.execute(_RENEW_LEASES, params)}

    def count_claim(self, claim: ClaimedVisualization, delta: int) -> bool:
        """Add ``delta`` (+1 or -1) to the row's count of claims that may have ended in
        a crash; False if the lease was taken over."""
        cursor = self.conn.execute(
            _COUNT_CLAIM, {"delta": delta, "id": claim.id, "lease": claim.lease}
        )
        return cursor.rowcount > 0

    def checkpoint_analysis(
        self,
        claim: ClaimedVisualization,
        *,
        summary: str,
        insights: list[str],
        visual_elements: dict[str, Any],
        raw: dict[str, Any],
        yield_for: uuid.UUID | None = None,
        paid_calls: Sequence[PaidCall] = (),
    ) -> AnalysisCheckpoint:
        """The analysis checkpoint (``saved`` False if the lease was taken over), with
        the held ledger rows of ``paid_calls`` and (``yield_for``: the row's person) the
        yield of ``yield_turn``, in one statement: one round trip, one transaction."""
        params = {
            "summary": summary,
            # As JSON text: psycopg's list dumper walks a list in Python to find its
            # element type (1.5 % of a worker's GIL time at 512 in flight, py-spy).
            "insights": json.dumps(insights, ensure_ascii=False),
            "visual_elements": Jsonb(visual_elements),
            "raw": Jsonb(raw),
            "id": claim.id,
            "lease": claim.lease,
            "yield_for": yield_for,
            **riding_rows(paid_calls),
        }
        row = self.conn.execute(_CHECKPOINT, params).fetchone()
        assert row is not None  # an aggregate: always one row
        return AnalysisCheckpoint(saved=row[0] > 0, yielded=bool(row[1]))

    def complete(
        self,
        claim: ClaimedVisualization,
        *,
        user_id: uuid.UUID,
        entry_moment: datetime,
        image_url: str | None = None,
        thumbnail_url: str | None = None,
        nanobanana_response: dict[str, Any] | None = None,
        style: str | None = None,
        paid_calls: Sequence[PaidCall] = (),
    ) -> bool:
        """Mark completed (with the picture when given: the last step and the completion
        in one write) and queue the person's analytics refresh for the entry's UTC day
        (analytics_refresh_queue, drained within a second by every worker process's
        refresher: workers/entrypoints/analytics_refresh.py), with the held ledger rows
        of ``paid_calls``, all in one statement; ``style``: a redraw's new style.
        False if the lease was taken over (nothing is written then).

        The refresh left the completion on 2026-12-03: recomputed per entry it cost
        ~1.6 ms of PostgreSQL's CPU and ~0.4 ms of ours on every entry; a drained batch
        of 10 or more people costs 0.3 and 0.06 ms per person, less when a person's
        entries share a day (docs/benchmarks.md, "The analytics refresh off the hot
        path")."""
        params = {
            "image_url": image_url,
            "thumbnail_url": thumbnail_url,
            "nanobanana_response": (
                None if nanobanana_response is None else Jsonb(nanobanana_response)
            ),
            "style": style,
            "id": claim.id,
            "lease": claim.lease,
            "user_id": user_id,
            "day": entry_moment.astimezone(UTC).date(),
            **riding_rows(paid_calls),
        }
        row = self.conn.execute(_COMPLETE, params).fetchone()
        assert row is not None  # an aggregate: always one row
        return bool(row[0] > 0)
