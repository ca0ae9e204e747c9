"""Repositories: every SQL statement of the project lives in this module.

Rows leave as plain dataclasses from domain/ or as models inside the unit of work;
callers never build queries.
"""

from __future__ import annotations

import json
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
from domain.vocabulary import EMOTIONS, VisualizationStatus


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

    def stuck_count(self, lease_s: int) -> int:
        """Rows processing past their lease (their worker died or hangs)."""
        v = Visualization
        expired = v.processing_started_at < func.now() - text(f"interval '{int(lease_s)} seconds'")
        stmt = (
            select(func.count())
            .select_from(v)
            .where(v.status == VisualizationStatus.PROCESSING.value)
            .where(expired)
        )
        return int(self.session.scalar(stmt) or 0)

    def recent_failure_reasons(self, seconds: int, limit: int = 10_000) -> list[str]:
        """error_message of the rows failed in the last ``seconds`` (by the status index:
        failed rows only)."""
        v = Visualization
        stmt = (
            select(v.error_message)
            .where(v.status == VisualizationStatus.FAILED.value)
            .where(v.updated_at > func.now() - text(f"interval '{int(seconds)} seconds'"))
            .limit(limit)
        )
        return [reason or "" for reason in self.session.scalars(stmt)]

    def status_counts(self) -> dict[str, int]:
        v = Visualization
        rows = self.session.execute(select(v.status, func.count()).group_by(v.status))
        return {status: count for status, count in rows}


class IntakeRepository:
    """Writes after a model call are compare-and-set on the history length: of two
    workers racing on one step, exactly one stores its question or completion."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, session_id: uuid.UUID, *, for_update: bool = False) -> IntakeSession | None:
        stmt = select(IntakeSession).where(IntakeSession.id == session_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalar(stmt)

    def add(self, intake: IntakeSession) -> IntakeSession:
        self.session.add(intake)
        self.session.flush()
        return intake

    def create(self, user_id: uuid.UUID, initial_situation: str) -> uuid.UUID:
        """A new session with no question yet."""
        row = self.add(
            IntakeSession(
                user_id=user_id, initial_situation=initial_situation, conversation_history=[]
            )
        )
        return row.id

    def replace_last_exchange(self, session_id: uuid.UUID, exchange: dict[str, Any]) -> None:
        """Overwrite the history's last element (the answer to the open question)."""
        self.session.execute(
            text(
                "UPDATE intake_sessions SET conversation_history = jsonb_set("
                "conversation_history, ARRAY[(jsonb_array_length(conversation_history) - 1)"
                "::text], CAST(:exchange AS jsonb)) WHERE id = :id"
            ),
            {"exchange": json.dumps(exchange), "id": session_id},
        )

    def store_question(
        self,
        session_id: uuid.UUID,
        *,
        expected_len: int,
        exchange: dict[str, Any],
        ai_context: dict[str, Any],
    ) -> bool:
        result = self.session.execute(
            text(
                "UPDATE intake_sessions SET conversation_history = conversation_history "
                "|| jsonb_build_array(CAST(:exchange AS jsonb)), current_step = :step, "
                "ai_context = CAST(:ctx AS jsonb) "
                "WHERE id = :id AND NOT is_complete "
                "AND jsonb_array_length(conversation_history) = :n"
            ),
            {
                "exchange": json.dumps(exchange),
                "step": exchange["step"],
                "ctx": json.dumps(ai_context),
                "id": session_id,
                "n": expected_len,
            },
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def complete(
        self, session_id: uuid.UUID, *, expected_len: int, summary: str, ai_context: dict[str, Any]
    ) -> bool:
        result = self.session.execute(
            text(
                "UPDATE intake_sessions SET is_complete = true, completed_at = now(), "
                "final_summary = :summary, ai_context = CAST(:ctx AS jsonb) "
                "WHERE id = :id AND NOT is_complete "
                "AND jsonb_array_length(conversation_history) = :n"
            ),
            {
                "summary": summary,
                "ctx": json.dumps(ai_context),
                "id": session_id,
                "n": expected_len,
            },
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def record_failure(self, session_id: uuid.UUID, step: int, reason: str) -> None:
        """Keep the reason in ai_context; the conversation itself stays as it was."""
        self.session.execute(
            text(
                "UPDATE intake_sessions SET ai_context = coalesce(ai_context, '{}'::jsonb) "
                "|| jsonb_build_object('last_error', CAST(:reason AS text), "
                "'failed_step', CAST(:step AS int), 'failed_at', now()) WHERE id = :id"
            ),
            {"reason": reason[:1000], "step": step, "id": session_id},
        )

    def state_counts(self) -> dict[str, int]:
        """Sessions by state: complete, waiting for the person, waiting for a worker,
        and failed (the last step failed for good; an operator can replay it)."""
        row = self.session.execute(
            text(
                "SELECT count(*) FILTER (WHERE done) AS complete, "
                "count(*) FILTER (WHERE NOT done AND failed) AS failed, "
                "count(*) FILTER (WHERE NOT done AND NOT failed AND NOT answered) "
                "AS waiting_for_person, "
                "count(*) FILTER (WHERE NOT done AND NOT failed AND answered) "
                "AS waiting_for_worker "
                "FROM (SELECT is_complete AS done, "
                "coalesce(ai_context ? 'failed_step', false) AS failed, "
                # No question yet counts as answered: the next turn is the worker's.
                "jsonb_typeof(conversation_history -> -1 -> 'answer') "
                "IS DISTINCT FROM 'null' AS answered FROM intake_sessions) AS s"
            )
        ).one()
        return dict(row._mapping)

    def due_turns(self, older_than_s: int, limit: int) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
        """(session, user, step) of open sessions whose next turn is due (no question
        yet, or the last one answered) but nothing happened for ``older_than_s``: the
        intake.step was lost. Sessions whose last attempt at that step failed for good
        are left to an operator (replaying them would fail the same way)."""
        rows = self.session.execute(
            text(
                "SELECT id, user_id, jsonb_array_length(conversation_history) + 1 AS step "
                "FROM intake_sessions "
                "WHERE NOT is_complete AND updated_at < now() - make_interval(secs => :grace) "
                "AND jsonb_typeof(conversation_history -> -1 -> 'answer') "
                "IS DISTINCT FROM 'null' "
                "AND (ai_context -> 'failed_step') IS DISTINCT FROM "
                "to_jsonb(jsonb_array_length(conversation_history) + 1) "
                "ORDER BY updated_at LIMIT :limit"
            ),
            {"grace": older_than_s, "limit": limit},
        )
        return [(row.id, row.user_id, int(row.step)) for row in rows]

    def notify(self, channel: str, payload: dict[str, Any]) -> None:
        """Delivered to LISTENers when (and only if) the transaction commits."""
        self.session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": channel, "payload": json.dumps(payload)},
        )


# --- analytics ---------------------------------------------------------------------

_NAMES = sorted(EMOTIONS)  # name order breaks every tie


def _each(template: str, sep: str = ", ") -> str:
    """``template`` once per emotion: {e} the name, {i} its 0-based name rank."""
    return sep.join(template.format(e=e, i=i) for i, e in enumerate(_NAMES))


# Per-emotion counts as ten filtered counts over the fixed vocabulary (enforced by a
# CHECK constraint): one hash aggregate, no unnest, an emotion listed twice counts once.
_COUNTS = _each("count(*) FILTER (WHERE '{e}' = ANY(en.emotions)) AS c_{e}", ",\n           ")
_COUNTS_JSON = "jsonb_strip_nulls(jsonb_build_object(" + _each("'{e}', nullif(t.c_{e}, 0)") + "))"
_RANKED = (
    "(SELECT array_agg(x.k ORDER BY x.v DESC, x.k) FROM (VALUES "
    + _each("('{e}', t.c_{e})")
    + ") AS x(k, v) WHERE x.v > 0)"
)
# The largest rise / fall as one sortable number, diff * 16 + (15 - name rank): GREATEST
# picks the largest change, then the first name. Decoded with _PICK below.
_RISE_KEY = (
    "greatest("
    + _each(
        "CASE WHEN r.prev_ok AND r.p_{e} > 0 AND r.c_{e} > r.p_{e} "
        "THEN (r.c_{e} - r.p_{e}) * 16 + (15 - {i}) END"
    )
    + ")"
)
_FALL_KEY = (
    "greatest("
    + _each(
        "CASE WHEN r.prev_ok AND r.p_{e} > r.c_{e} THEN (r.p_{e} - r.c_{e}) * 16 + (15 - {i}) END"
    )
    + ")"
)
_NEW_LIST = (
    "concat_ws(', ', "
    + _each("CASE WHEN r.prev_ok AND r.c_{e} > 0 AND r.p_{e} = 0 THEN '{e}' END")
    + ")"
)
_NAME_ARRAY = "ARRAY[" + _each("'{e}'") + "]"
_CUR_ARRAY = "ARRAY[" + _each("r.c_{e}") + "]"
_PREV_ARRAY = "ARRAY[" + _each("r.p_{e}") + "]"


def _pick(array: str, key: str) -> str:
    return f"({array})[16 - {key} % 16]"


# One statement per period kind and batch of users: aggregate in PostgreSQL, derive the
# insights from the previous period with window functions, upsert, and (optionally)
# delete the rows of periods in range that no longer have entries. Entries are read from
# :lookback_day (STREAK_CAP periods before :from_day) so that comparisons and streaks of
# the first periods in range see their history; only periods starting in
# [:from_day, :to_day) are written.
_RECOMPUTE_CTES = f"""
WITH totals AS (
    SELECT en.user_id,
           date_trunc(:kind, en.created_at AT TIME ZONE 'UTC')::date AS period_start,
           count(*) AS total, round(avg(en.intensity), 2) AS avg_intensity,
           {_COUNTS}
    FROM emotion_entries en
    WHERE en.user_id = ANY(CAST(:user_ids AS uuid[]))
      AND en.created_at >= CAST(:lookback_day AS date)::timestamp AT TIME ZONE 'UTC'
      AND en.created_at < CAST(:to_day AS date)::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1, 2
),
seq AS (
    SELECT t.*, {_COUNTS_JSON} AS counts, ({_RANKED})[1:3] AS top,
           coalesce(lag(t.period_start) OVER w
                    = (t.period_start - CAST(:step AS interval))::date, false) AS prev_ok,
           lag(t.total) OVER w AS prev_total,
           lag(t.avg_intensity) OVER w AS prev_avg,
           {_each("lag(t.c_{e}) OVER w AS p_{e}")},
           CASE CAST(:kind AS text)
               WHEN 'month' THEN (extract(year FROM t.period_start) * 12
                                  + extract(month FROM t.period_start))::int
               WHEN 'week' THEN (t.period_start - DATE '2000-01-03') / 7
               ELSE t.period_start - DATE '2000-01-03'
           END - row_number() OVER w AS island
    FROM totals t
    WINDOW w AS (PARTITION BY t.user_id ORDER BY t.period_start)
),
r AS (
    SELECT s.*, CAST(:word AS text) AS word,
           least(row_number() OVER (PARTITION BY s.user_id, s.island ORDER BY s.period_start),
                 CAST(:cap AS int)) AS streak
    FROM seq s
),
up AS (
    INSERT INTO emotion_analytics AS ea
        (user_id, period_start, period_end, emotion_counts, average_intensity,
         total_entries, most_common_emotions, insights, computed_at)
    SELECT r.user_id, r.period_start,
           (r.period_start + CAST(:step AS interval) - interval '1 day')::date,
           r.counts, r.avg_intensity, r.total, r.top,
           array_remove(ARRAY[
               format('%s %s this %s', r.total,
                      CASE r.total WHEN 1 THEN 'entry' ELSE 'entries' END, r.word)
               || CASE
                      WHEN NOT r.prev_ok THEN format('; none the previous %s.', r.word)
                      WHEN r.total > r.prev_total THEN format(', up from %s.', r.prev_total)
                      WHEN r.total < r.prev_total THEN format(', down from %s.', r.prev_total)
                      ELSE format(', as many as the previous %s.', r.word)
                  END,
               CASE WHEN k.rise_key IS NOT NULL THEN format(
                   '%s rose from %s to %s.', initcap({_pick(_NAME_ARRAY, "k.rise_key")}),
                   {_pick(_PREV_ARRAY, "k.rise_key")}, {_pick(_CUR_ARRAY, "k.rise_key")}) END,
               CASE WHEN k.fall_key IS NOT NULL THEN format(
                   '%s fell from %s to %s.', initcap({_pick(_NAME_ARRAY, "k.fall_key")}),
                   {_pick(_PREV_ARRAY, "k.fall_key")}, {_pick(_CUR_ARRAY, "k.fall_key")}) END,
               CASE WHEN k.new_list <> '' THEN format('New this %s: %s.', r.word, k.new_list) END,
               CASE
                   WHEN NOT r.prev_ok THEN NULL
                   WHEN r.avg_intensity - r.prev_avg >= CAST(:trend AS numeric) THEN format(
                       'Average intensity rose from %s to %s.', r.prev_avg, r.avg_intensity)
                   WHEN r.prev_avg - r.avg_intensity >= CAST(:trend AS numeric) THEN format(
                       'Average intensity fell from %s to %s.', r.prev_avg, r.avg_intensity)
                   ELSE format('Average intensity held steady around %s.', r.avg_intensity)
               END,
               CASE WHEN r.streak >= 2 THEN format('%s%s %ss in a row with entries.', r.streak,
                   CASE WHEN r.streak = CAST(:cap AS int) THEN '+' ELSE '' END, r.word) END
           ], NULL),
           now()
    FROM r
    -- Evaluated only for the rows written (look-back rows are history, not output).
    CROSS JOIN LATERAL (
        SELECT {_RISE_KEY} AS rise_key, {_FALL_KEY} AS fall_key, {_NEW_LIST} AS new_list
    ) AS k
    WHERE r.period_start >= CAST(:from_day AS date)
    ON CONFLICT (user_id, period_start, period_end) DO UPDATE SET
        emotion_counts = EXCLUDED.emotion_counts,
        average_intensity = EXCLUDED.average_intensity,
        total_entries = EXCLUDED.total_entries,
        most_common_emotions = EXCLUDED.most_common_emotions,
        insights = EXCLUDED.insights,
        computed_at = EXCLUDED.computed_at
    -- A row that would not change is not rewritten: a re-run writes nothing (no new
    -- row versions, no index churn) and computed_at says when the values last changed.
    WHERE (ea.emotion_counts, ea.average_intensity, ea.total_entries,
           ea.most_common_emotions, ea.insights)
          IS DISTINCT FROM (EXCLUDED.emotion_counts, EXCLUDED.average_intensity,
                            EXCLUDED.total_entries, EXCLUDED.most_common_emotions,
                            EXCLUDED.insights)
    RETURNING user_id, period_start
)"""

_RECOMPUTE_SQL = _RECOMPUTE_CTES + "\nSELECT count(*) FROM up"

# Rows in range whose period no longer has entries (docs/analytics.md) are deleted in
# the same statement. Each existing row is checked by one probe of the covering
# (user_id, created_at) index: linear whatever the planner believes. (An anti-join
# against the CTE of computed periods was planned as a nested loop over that CTE when
# the statistics still showed the table empty, e.g. right after a first run: 4 x slower.)
_RECOMPUTE_AND_DROP_EMPTY_SQL = (
    _RECOMPUTE_CTES
    + """,
gone AS (
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
    RETURNING 1
)
SELECT (SELECT count(*) FROM up) + 0 * (SELECT count(*) FROM gone)"""
)

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

        ``first_day`` and ``end_day`` must be period boundaries. Returns the rows written
        (inserted, or changed: a row that would stay the same is left alone).
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
        # JIT compiles this statement for ~0.5 s per batch and gains less than that.
        self.session.execute(text("SET LOCAL jit = off"))
        sql = _RECOMPUTE_AND_DROP_EMPTY_SQL if drop_empty else _RECOMPUTE_SQL
        return int(self.session.execute(text(sql), params).scalar_one())

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
