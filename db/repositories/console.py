"""The operator console's read model (workers/console): pages of failed rows with their
entry, outcomes per minute for the overview's charts, and how fresh each kind of
analytics is. Reads only; the console's actions use the visualizations repository."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, case, cast, extract, func, literal, or_, select, text
from sqlalchemy.orm import Session

from db.models import EmotionAnalytics, EmotionEntry, Visualization
from domain.vocabulary import VisualizationStatus

FAILED = VisualizationStatus.FAILED.value
COMPLETED = VisualizationStatus.COMPLETED.value


@dataclass(frozen=True)
class FailedRow:
    entry_id: uuid.UUID
    user_id: uuid.UUID
    style: str
    reason: str | None
    failed_at: datetime
    situation: str  # the entry's text, cut to SITUATION_CHARS


@dataclass(frozen=True)
class MinuteOutcomes:
    minutes_ago: int  # 0 = the current minute
    completed: int
    failed: int


@dataclass(frozen=True)
class AnalyticsFreshness:
    kind: str  # day | week | month
    rows: int
    people: int
    last_written_at: datetime
    written_near_last: int  # rows written in the hour up to the last write


SITUATION_CHARS = 160


class ConsoleRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def failure_reasons(self, limit: int = 5000) -> list[tuple[str | None, int]]:
        """(error_message, rows) of every failed row, most frequent first (the console
        classifies the reasons with domain.failures, then pages a class's rows)."""
        v = Visualization
        stmt = (
            select(v.error_message, func.count())
            .where(v.status == FAILED)
            .group_by(v.error_message)
            .order_by(func.count().desc(), v.error_message)
            .limit(limit)
        )
        return [(reason, int(n)) for reason, n in self.session.execute(stmt)]

    def failed_rows(
        self, reasons: Sequence[str | None] | None, *, limit: int, offset: int = 0
    ) -> list[FailedRow]:
        """Failed rows, newest failure first; only those with one of ``reasons`` when
        given (None stands for a row failed without a message)."""
        v, e = Visualization, EmotionEntry
        failed_at = func.coalesce(v.processing_completed_at, v.updated_at)
        stmt = (
            select(
                v.entry_id,
                v.user_id,
                v.style,
                v.error_message,
                failed_at,
                func.left(e.situation, SITUATION_CHARS),
            )
            .join(e, e.id == v.entry_id)
            .where(v.status == FAILED)
        )
        if reasons is not None:
            texts = [r for r in reasons if r is not None]
            matches = [v.error_message.in_(texts)] if texts else []
            if None in reasons:
                matches.append(v.error_message.is_(None))
            stmt = stmt.where(or_(*matches) if matches else literal(False))
        stmt = stmt.order_by(failed_at.desc(), v.entry_id).limit(limit).offset(offset)
        return [FailedRow(*row) for row in self.session.execute(stmt)]

    def outcomes_per_minute(self, minutes: int = 60) -> list[MinuteOutcomes]:
        """Rows completed and failed in each of the last ``minutes`` minutes (only the
        minutes that had any). One scan of the finished rows of that window."""
        v = Visualization
        ago = cast(
            func.floor(
                (extract("epoch", func.now()) - extract("epoch", v.processing_completed_at)) / 60
            ),
            Integer,
        ).label("ago")
        stmt = (
            select(
                ago,
                func.count().filter(v.status == COMPLETED),
                func.count().filter(v.status == FAILED),
            )
            .where(v.status.in_([COMPLETED, FAILED]))
            .where(
                v.processing_completed_at > func.now() - text(f"interval '{int(minutes)} minutes'")
            )
            .group_by(ago)
            .order_by(ago)
        )
        return [
            MinuteOutcomes(max(0, int(m)), int(c), int(f)) for m, c, f in self.session.execute(stmt)
        ]

    def analytics_freshness(self) -> list[AnalyticsFreshness]:
        """Per period kind (told apart by the period's length): rows, people, the last
        write (a scheduled recompute or an entry's refresh) and the rows written in the
        hour up to it (that run's size)."""
        a = EmotionAnalytics
        kind = case(
            (a.period_end == a.period_start, "day"),
            (a.period_end - a.period_start == 6, "week"),
            else_="month",
        ).label("kind")
        inner = select(
            kind,
            a.user_id,
            a.computed_at,
            func.max(a.computed_at).over(partition_by=kind).label("last"),
        ).subquery()
        stmt = (
            select(
                inner.c.kind,
                func.count(),
                func.count(inner.c.user_id.distinct()),
                func.max(inner.c.last),
                func.count().filter(inner.c.computed_at > inner.c.last - text("interval '1 hour'")),
            )
            .group_by(inner.c.kind)
            .order_by(inner.c.kind)
        )
        return [
            AnalyticsFreshness(k, int(r), int(p), t, int(n))
            for k, r, p, t, n in self.session.execute(stmt)
        ]

    def row_states(self, entry_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[str, str | None]]:
        """(status, error_message) of these entries' visualization rows: what a dead
        letter's entry became (the message itself rarely says why it died)."""
        if not entry_ids:
            return {}
        v = Visualization
        stmt = select(v.entry_id, v.status, v.error_message).where(v.entry_id.in_(list(entry_ids)))
        return {entry_id: (status, error) for entry_id, status, error in self.session.execute(stmt)}

    def entry_of_session(self, session_id: uuid.UUID) -> uuid.UUID | None:
        """The entry a completed intake session became, if any."""
        stmt = select(EmotionEntry.id).where(EmotionEntry.intake_session_id == session_id)
        return self.session.scalars(stmt.limit(1)).first()
