"""Repositories: every SQL statement of the project lives in this module.

Rows leave as plain dataclasses from domain/ or as models inside the unit of work;
callers never build queries.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db.models import EmotionAnalytics, EmotionEntry, IntakeSession, User, Visualization
from domain.analysis import EntrySnapshot
from domain.analytics import INTENSITY_TREND_THRESHOLD, STREAK_CAP, shift_periods
from domain.periods import PeriodKind, periods_containing
from domain.vocabulary import VisualizationStatus


class UserRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get_by_email(self, email: str) -> User | None:
        return self.session.scalar(select(User).where(User.email == email))

    def add(self, user: User) -> User:
        self.session.add(user)
        self.session.flush()
        return user

    def list_ids(self) -> list[uuid.UUID]:
        return list(self.session.scalars(select(User.id).order_by(User.id)))


@dataclass(frozen=True)
class EntryRow:
    snapshot: EntrySnapshot
    user_id: uuid.UUID
    created_at: datetime


class EntryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, entry_id: uuid.UUID) -> EntryRow | None:
        entry = self.session.get(EmotionEntry, entry_id)
        if entry is None:
            return None
        return EntryRow(
            snapshot=EntrySnapshot(
                entry_id=str(entry.id),
                situation=entry.situation,
                emotions=tuple(entry.emotions),
                intensity=entry.intensity,
                notes=entry.notes,
            ),
            user_id=entry.user_id,
            created_at=entry.created_at,
        )

    def add(self, entry: EmotionEntry) -> EmotionEntry:
        self.session.add(entry)
        self.session.flush()
        return entry

    def situations_for_user(self, user_id: uuid.UUID) -> set[str]:
        stmt = select(EmotionEntry.situation).where(EmotionEntry.user_id == user_id)
        return set(self.session.scalars(stmt))

    def ids_without_finished_visualization(
        self, limit: int = 1000, older_than_s: int = 0
    ) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """Entries whose visualization is missing or still pending, created more than
        ``older_than_s`` ago (younger ones are probably still in the queue)."""
        grace = text(f"interval '{int(older_than_s)} seconds'")
        stmt = (
            select(EmotionEntry.id, EmotionEntry.user_id)
            .outerjoin(Visualization, Visualization.entry_id == EmotionEntry.id)
            .where(
                (Visualization.id.is_(None))
                | (Visualization.status == VisualizationStatus.PENDING.value)
            )
            .where(EmotionEntry.created_at < func.now() - grace)
            .order_by(EmotionEntry.created_at)
            .limit(limit)
        )
        return [(row[0], row[1]) for row in self.session.execute(stmt)]


@dataclass(frozen=True)
class ClaimedVisualization:
    """A visualization row this worker holds the lease on (``lease`` is its token)."""

    id: uuid.UUID
    lease: datetime
    style: str
    gemini_analysis: dict[str, Any] | None
    image_url: str | None


class VisualizationRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def ensure_row(self, entry_id: uuid.UUID, user_id: uuid.UUID, style: str | None) -> None:
        values: dict[str, Any] = {"entry_id": entry_id, "user_id": user_id}
        if style:
            values["style"] = style
        stmt = (
            pg_insert(Visualization)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["entry_id"])
        )
        self.session.execute(stmt)

    def get_by_entry(self, entry_id: uuid.UUID) -> Visualization | None:
        return self.session.scalar(select(Visualization).where(Visualization.entry_id == entry_id))

    def claim(self, entry_id: uuid.UUID, lease_s: int) -> ClaimedVisualization | None:
        """Take the lease on a pending row, or on a processing row whose lease expired.

        One UPDATE ... RETURNING: of two racing workers exactly one gets the row.
        """
        v = Visualization
        expired = v.processing_started_at < func.now() - text(f"interval '{int(lease_s)} seconds'")
        stmt = (
            update(v)
            .where(v.entry_id == entry_id)
            .where(
                (v.status == VisualizationStatus.PENDING.value)
                | ((v.status == VisualizationStatus.PROCESSING.value) & expired)
            )
            .values(
                status=VisualizationStatus.PROCESSING.value,
                processing_started_at=func.clock_timestamp(),
            )
            .returning(v.id, v.processing_started_at, v.style, v.gemini_analysis, v.image_url)
        )
        row = self.session.execute(stmt).one_or_none()
        if row is None:
            return None
        return ClaimedVisualization(row[0], row[1], row[2], row[3], row[4])

    def _held(self, claim: ClaimedVisualization) -> Any:
        v = Visualization
        return (
            update(v)
            .where(v.id == claim.id)
            .where(v.status == VisualizationStatus.PROCESSING.value)
            .where(v.processing_started_at == claim.lease)
        )

    def save_analysis(
        self,
        claim: ClaimedVisualization,
        *,
        summary: str,
        insights: list[str],
        visual_elements: dict[str, Any],
        raw: dict[str, Any],
    ) -> bool:
        result = self.session.execute(
            self._held(claim).values(
                summary=summary,
                insights=insights,
                visual_elements=visual_elements,
                gemini_analysis=raw,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def save_image(
        self,
        claim: ClaimedVisualization,
        *,
        image_url: str,
        thumbnail_url: str,
        raw: dict[str, Any],
    ) -> bool:
        result = self.session.execute(
            self._held(claim).values(
                image_url=image_url, thumbnail_url=thumbnail_url, nanobanana_response=raw
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def complete(self, claim: ClaimedVisualization) -> bool:
        result = self.session.execute(
            self._held(claim).values(
                status=VisualizationStatus.COMPLETED.value,
                processing_completed_at=func.now(),
                error_message=None,
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def release(self, claim: ClaimedVisualization, reason: str) -> bool:
        """Give the lease back after a transient failure, keeping the last error."""
        result = self.session.execute(
            self._held(claim).values(
                status=VisualizationStatus.PENDING.value,
                processing_started_at=None,
                error_message=f"will retry: {reason}",
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def fail(self, entry_id: uuid.UUID, reason: str) -> bool:
        """Mark failed, unless already completed (a late failure never undoes success)."""
        v = Visualization
        result = self.session.execute(
            update(v)
            .where(v.entry_id == entry_id)
            .where(v.status != VisualizationStatus.COMPLETED.value)
            .values(
                status=VisualizationStatus.FAILED.value,
                error_message=reason,
                processing_completed_at=func.now(),
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def replay_failed(
        self, entry_ids: Sequence[uuid.UUID] | None = None
    ) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
        """Set failed rows back to pending; return (entry_id, user_id, style) to publish."""
        v = Visualization
        stmt = update(v).where(v.status == VisualizationStatus.FAILED.value)
        if entry_ids is not None:
            stmt = stmt.where(v.entry_id.in_(list(entry_ids)))
        stmt = stmt.values(
            status=VisualizationStatus.PENDING.value,
            processing_started_at=None,
            processing_completed_at=None,
        ).returning(v.entry_id, v.user_id, v.style)
        return [(r[0], r[1], r[2]) for r in self.session.execute(stmt)]

    def stuck(self, lease_s: int, limit: int = 1000) -> list[tuple[uuid.UUID, uuid.UUID]]:
        v = Visualization
        stmt = (
            select(v.entry_id, v.user_id)
            .where(v.status == VisualizationStatus.PROCESSING.value)
            .where(
                v.processing_started_at < func.now() - text(f"interval '{int(lease_s)} seconds'")
            )
            .limit(limit)
        )
        return [(r[0], r[1]) for r in self.session.execute(stmt)]

    def status_counts(self) -> dict[str, int]:
        v = Visualization
        rows = self.session.execute(select(v.status, func.count()).group_by(v.status))
        return {status: count for status, count in rows}


class IntakeRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, session_id: uuid.UUID, *, for_update: bool = False) -> IntakeSession | None:
        stmt = select(IntakeSession).where(IntakeSession.id == session_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalar(stmt)


# --- analytics ---------------------------------------------------------------------

# One statement per period kind and batch of users: aggregate in PostgreSQL, derive the
# insights from the previous period with window functions, upsert. Entries are read
# from :lookback_day (STREAK_CAP periods before :from_day) so that comparisons and
# streaks of the first periods in range see their history; only periods starting in
# [:from_day, :to_day) are written. Ties in most_common_emotions break by name.
_RECOMPUTE_SQL = """
WITH e AS (
    SELECT en.id, en.user_id, en.intensity, en.emotions,
           date_trunc(:kind, en.created_at AT TIME ZONE 'UTC')::date AS period_start
    FROM emotion_entries en
    WHERE en.user_id = ANY(CAST(:user_ids AS uuid[]))
      AND en.created_at >= CAST(:lookback_day AS date)::timestamp AT TIME ZONE 'UTC'
      AND en.created_at < CAST(:to_day AS date)::timestamp AT TIME ZONE 'UTC'
),
totals AS (
    SELECT user_id, period_start, count(*) AS total, round(avg(intensity), 2) AS avg_intensity
    FROM e GROUP BY user_id, period_start
),
per_emotion AS (
    SELECT e.user_id, e.period_start, emo.emotion, count(DISTINCT e.id) AS n
    FROM e CROSS JOIN LATERAL unnest(e.emotions) AS emo(emotion)
    GROUP BY e.user_id, e.period_start, emo.emotion
),
agg AS (
    SELECT user_id, period_start,
           jsonb_object_agg(emotion, n ORDER BY emotion) AS counts,
           (array_agg(emotion ORDER BY n DESC, emotion ASC))[1:3] AS top
    FROM per_emotion GROUP BY user_id, period_start
),
seq AS (
    SELECT t.user_id, t.period_start, t.total, t.avg_intensity, a.counts, a.top,
           lag(t.period_start) OVER w
               = (t.period_start - CAST(:step AS interval))::date AS has_prev,
           lag(t.total) OVER w AS prev_total,
           lag(t.avg_intensity) OVER w AS prev_avg,
           lag(a.counts) OVER w AS prev_counts,
           CASE CAST(:kind AS text)
               WHEN 'month' THEN (extract(year FROM t.period_start) * 12
                                  + extract(month FROM t.period_start))::int
               WHEN 'week' THEN (t.period_start - DATE '2000-01-03') / 7
               ELSE t.period_start - DATE '2000-01-03'
           END - row_number() OVER w AS island
    FROM totals t JOIN agg a USING (user_id, period_start)
    WINDOW w AS (PARTITION BY t.user_id ORDER BY t.period_start)
),
r AS (
    SELECT s.*, coalesce(s.has_prev, false) AS prev_ok, CAST(:word AS text) AS word,
           least(row_number() OVER (PARTITION BY s.user_id, s.island ORDER BY s.period_start),
                 CAST(:cap AS int)) AS streak
    FROM seq s
)
INSERT INTO emotion_analytics AS ea
    (user_id, period_start, period_end, emotion_counts, average_intensity,
     total_entries, most_common_emotions, insights, computed_at)
SELECT r.user_id, r.period_start,
       (r.period_start + CAST(:step AS interval) - interval '1 day')::date,
       r.counts, r.avg_intensity, r.total, r.top,
       array_remove(ARRAY[
           CASE
               WHEN NOT r.prev_ok THEN format('%s %s this %s; none the previous %s.', r.total,
                   CASE r.total WHEN 1 THEN 'entry' ELSE 'entries' END, r.word, r.word)
               WHEN r.total > r.prev_total THEN format('%s %s this %s, up from %s.', r.total,
                   CASE r.total WHEN 1 THEN 'entry' ELSE 'entries' END, r.word, r.prev_total)
               WHEN r.total < r.prev_total THEN format('%s %s this %s, down from %s.', r.total,
                   CASE r.total WHEN 1 THEN 'entry' ELSE 'entries' END, r.word, r.prev_total)
               ELSE format('%s %s this %s, as many as the previous %s.', r.total,
                   CASE r.total WHEN 1 THEN 'entry' ELSE 'entries' END, r.word, r.word)
           END,
           (SELECT format('%s rose from %s to %s.', initcap(j.key), r.prev_counts ->> j.key,
                          j.value)
            FROM jsonb_each_text(r.counts) AS j
            WHERE r.prev_ok AND r.prev_counts ? j.key
              AND j.value::int > (r.prev_counts ->> j.key)::int
            ORDER BY j.value::int - (r.prev_counts ->> j.key)::int DESC, j.key LIMIT 1),
           (SELECT format('%s fell from %s to %s.', initcap(j.key), j.value,
                          coalesce(r.counts ->> j.key, '0'))
            FROM jsonb_each_text(r.prev_counts) AS j
            WHERE r.prev_ok AND j.value::int > coalesce((r.counts ->> j.key)::int, 0)
            ORDER BY j.value::int - coalesce((r.counts ->> j.key)::int, 0) DESC, j.key LIMIT 1),
           (SELECT format('New this %s: %s.', r.word, string_agg(k, ', ' ORDER BY k))
            FROM jsonb_object_keys(r.counts) AS k
            WHERE r.prev_ok AND NOT r.prev_counts ? k
            HAVING count(*) > 0),
           CASE
               WHEN NOT r.prev_ok THEN NULL
               WHEN r.avg_intensity - r.prev_avg >= CAST(:trend AS numeric)
                   THEN format('Average intensity rose from %s to %s.', r.prev_avg, r.avg_intensity)
               WHEN r.prev_avg - r.avg_intensity >= CAST(:trend AS numeric)
                   THEN format('Average intensity fell from %s to %s.', r.prev_avg, r.avg_intensity)
               ELSE format('Average intensity held steady around %s.', r.avg_intensity)
           END,
           CASE WHEN r.streak >= 2 THEN format('%s%s %ss in a row with entries.', r.streak,
               CASE WHEN r.streak = CAST(:cap AS int) THEN '+' ELSE '' END, r.word) END
       ], NULL),
       now()
FROM r
WHERE r.period_start >= CAST(:from_day AS date)
ON CONFLICT (user_id, period_start, period_end) DO UPDATE SET
    emotion_counts = EXCLUDED.emotion_counts,
    average_intensity = EXCLUDED.average_intensity,
    total_entries = EXCLUDED.total_entries,
    most_common_emotions = EXCLUDED.most_common_emotions,
    insights = EXCLUDED.insights,
    computed_at = EXCLUDED.computed_at
"""

# Periods in the range whose entries are all gone lose their row (docs/analytics.md).
_DELETE_EMPTY_SQL = """
DELETE FROM emotion_analytics ea
WHERE ea.user_id = ANY(CAST(:user_ids AS uuid[]))
  AND ea.period_start >= CAST(:from_day AS date)
  AND ea.period_start < CAST(:to_day AS date)
  AND ea.period_end = (ea.period_start + CAST(:step AS interval) - interval '1 day')::date
  AND NOT EXISTS (
      SELECT 1 FROM emotion_entries en
      WHERE en.user_id = ea.user_id
        AND en.created_at >= ea.period_start::timestamp AT TIME ZONE 'UTC'
        AND en.created_at < (ea.period_end + 1)::timestamp AT TIME ZONE 'UTC'
  )
"""

_STEP: dict[PeriodKind, str] = {"day": "1 day", "week": "7 days", "month": "1 month"}


class AnalyticsRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

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

        ``first_day`` and ``end_day`` must be period boundaries. Returns rows upserted.
        """
        params = {
            "kind": kind,
            "user_ids": [str(u) for u in user_ids],
            "lookback_day": shift_periods(kind, first_day, -STREAK_CAP),
            "from_day": first_day,
            "to_day": end_day,
            "step": _STEP[kind],
            "word": kind,
            "cap": STREAK_CAP,
            "trend": INTENSITY_TREND_THRESHOLD,
        }
        upserted = self.session.execute(text(_RECOMPUTE_SQL), params).rowcount  # type: ignore[attr-defined]
        if drop_empty:
            self.session.execute(text(_DELETE_EMPTY_SQL), params)
        return int(upserted)

    def refresh_for_entry(self, user_id: uuid.UUID, moment: datetime, *, removed: bool) -> None:
        """The incremental path, after one entry of ``user_id`` at ``moment`` was added
        (or removed): the same statement, for that user, for the entry's day, week and
        month and the STREAK_CAP periods after each (their comparisons and streaks
        depend on it). Only a removal can leave a period empty, so only then are empty
        periods' rows deleted.
        """
        for period in periods_containing(moment):
            end = shift_periods(period.kind, period.start, STREAK_CAP + 1)
            self.recompute(period.kind, [user_id], period.start, end, drop_empty=removed)

    def for_user(self, user_id: uuid.UUID) -> list[EmotionAnalytics]:
        stmt = (
            select(EmotionAnalytics)
            .where(EmotionAnalytics.user_id == user_id)
            .order_by(EmotionAnalytics.period_start, EmotionAnalytics.period_end)
        )
        return list(self.session.scalars(stmt))

    def delete_for_user(self, user_id: uuid.UUID) -> None:
        self.session.execute(delete(EmotionAnalytics).where(EmotionAnalytics.user_id == user_id))
