"""emotion_analytics: set-based recomputation (db/analytics_statement.py), its lane
locks, and reads."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from db import analytics_statement
from db.models import EmotionAnalytics
from domain.periods import PeriodKind

# Built once: text() parses the 10 KB statement for its parameters each time it is made,
# a millisecond of CPU on every recompute.
_RECOMPUTE = text(analytics_statement.RECOMPUTE_SQL)
_RECOMPUTE_AND_DROP_EMPTY = text(analytics_statement.RECOMPUTE_AND_DROP_EMPTY_SQL)


# One lock per (period kind, lane), held until the transaction ends; several in one
# statement, in the arrays' order.
_LANE_LOCKS = text(
    "SELECT count(pg_advisory_xact_lock(hashtext('emotion_analytics:' || l.k), l.lane)) "
    "FROM unnest(CAST(:kinds AS text[]), CAST(:lanes AS int[])) AS l(k, lane)"
)

# The oldest queued refreshes not taken by another runner: a range scan of the primary
# key, rows locked until the transaction ends (SKIP LOCKED: two runners never take the
# same row, and neither waits for the other).
_TAKE_QUEUED = text(
    "SELECT id, user_id, day FROM analytics_refresh_queue ORDER BY id "
    "LIMIT :n FOR UPDATE SKIP LOCKED"
)
# One page of user ids after a given one: a range scan of the users' primary key
# (keyset pagination; never a scan of emotion_entries).
_USER_PAGE = text("SELECT id FROM users WHERE id > :after ORDER BY id LIMIT :n")
_FIRST_USER_PAGE = text("SELECT id FROM users ORDER BY id LIMIT :n")
# The refresher's backlog: rows queued (counted up to BACKLOG_COUNT_CAP, so a huge one
# costs no more than that) and the oldest one's age (the first of the primary key). With
# a million rows queued: a seq scan stopped at the cap and one index row, 10.7 ms.
BACKLOG_COUNT_CAP = 100_000
_BACKLOG = text(
    "SELECT (SELECT count(*) FROM (SELECT FROM analytics_refresh_queue LIMIT :cap) q), "
    "(SELECT extract(epoch FROM now() - created_at) FROM analytics_refresh_queue "
    "ORDER BY id LIMIT 1)"
)
_DELETE_QUEUED = text("DELETE FROM analytics_refresh_queue WHERE id = ANY(CAST(:ids AS bigint[]))")


@dataclass(frozen=True)
class QueuedRefresh:
    """A deleted or edited entry's person and UTC day (analytics_refresh_queue)."""

    id: int
    user_id: uuid.UUID
    day: date


@dataclass(frozen=True)
class RefreshBacklog:
    """analytics_refresh_queue at a glance: rows waiting (at most BACKLOG_COUNT_CAP) and
    the oldest one's age in seconds (None: empty)."""

    queued: int
    oldest_age_s: float | None


@dataclass(frozen=True)
class AnalyticsRow:
    user_id: uuid.UUID
    period_start: date
    period_end: date
    emotion_counts: dict[str, int]
    average_intensity: Decimal | None
    total_entries: int | None
    most_common_emotions: list[str]
    insights: list[str]
    computed_at: datetime


def analytics_row(a: EmotionAnalytics) -> AnalyticsRow:
    return AnalyticsRow(
        user_id=a.user_id,
        period_start=a.period_start,
        period_end=a.period_end,
        emotion_counts=dict(a.emotion_counts),
        average_intensity=a.average_intensity,
        total_entries=a.total_entries,
        most_common_emotions=list(a.most_common_emotions or []),
        insights=list(a.insights or []),
        computed_at=a.computed_at,
    )


class AnalyticsRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def lock_lane(self, kind: PeriodKind, lane: int) -> None:
        """Wait for, then hold until the unit of work ends, the lock of ``lane`` for
        ``kind``: two batches that could touch the same users queue instead of
        interleaving (workers/services/analytics.py)."""
        self.lock_lanes([(kind, lane)])

    def lock_lanes(self, lanes: Iterable[tuple[PeriodKind, int]]) -> None:
        """``lock_lane`` for several (kind, lane) pairs in one statement, in the order
        given: every holder of more than one lane takes them kind by kind in
        PERIOD_KINDS order, lanes ascending (``ordered_lanes``), so none waits on
        another in a cycle. (A function scan of unnest returns the arrays' order.)"""
        pairs = list(lanes)
        if pairs:
            kinds, numbers = zip(*pairs, strict=True)
            self.session.execute(_LANE_LOCKS, {"kinds": list(kinds), "lanes": list(numbers)})

    def user_ids_after(self, after: uuid.UUID | None, limit: int) -> list[uuid.UUID]:
        """The next ``limit`` user ids in id order after ``after`` (from the first when
        None): the recompute's planning pages through users with this."""
        if after is None:
            return list(self.session.scalars(_FIRST_USER_PAGE, {"n": limit}))
        return list(self.session.scalars(_USER_PAGE, {"after": after, "n": limit}))

    def take_queued_refreshes(self, limit: int) -> list[QueuedRefresh]:
        """Up to ``limit`` queued refreshes, oldest first, locked by this unit of work
        (rows another runner holds are skipped)."""
        rows = self.session.execute(_TAKE_QUEUED, {"n": limit})
        return [QueuedRefresh(r.id, r.user_id, r.day) for r in rows]

    def refresh_backlog(self) -> RefreshBacklog:
        queued, oldest = self.session.execute(_BACKLOG, {"cap": BACKLOG_COUNT_CAP}).one()
        return RefreshBacklog(int(queued), None if oldest is None else float(oldest))

    def delete_queued_refreshes(self, ids: Iterable[int]) -> None:
        self.session.execute(_DELETE_QUEUED, {"ids": list(ids)})

    def recompute(
        self,
        kind: PeriodKind,
        user_ids: Iterable[uuid.UUID],
        first_day: date,
        end_day: date,
        *,
        drop_empty: bool = True,
    ) -> int:
        """Recompute ``kind`` rows for periods starting in [first_day, end_day) exactly.

        ``first_day`` and ``end_day`` must be period boundaries. Returns the rows written
        (inserted, or changed: a row that would stay the same is left alone).
        """
        params = analytics_statement.parameters(kind, user_ids, first_day, end_day)
        # (JIT is off for our connections: db/engine.py.)
        statement = _RECOMPUTE_AND_DROP_EMPTY if drop_empty else _RECOMPUTE
        return int(self.session.execute(statement, params).scalar_one())

    def for_user(self, user_id: uuid.UUID) -> list[AnalyticsRow]:
        stmt = (
            select(EmotionAnalytics)
            .where(EmotionAnalytics.user_id == user_id)
            .order_by(EmotionAnalytics.period_start, EmotionAnalytics.period_end)
        )
        return [analytics_row(row) for row in self.session.scalars(stmt)]

    def delete_for_user(self, user_id: uuid.UUID) -> None:
        self.session.execute(delete(EmotionAnalytics).where(EmotionAnalytics.user_id == user_id))
