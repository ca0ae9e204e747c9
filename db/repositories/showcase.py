"""Read models and resets for the development tools (workers/devtools: the demo and
its gallery). Product code does not use them; they are here so that every SQL statement
lives in db/."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from db.models import EmotionAnalytics, EmotionEntry, IntakeSession, User, Visualization
from db.repositories.analytics import AnalyticsRow, analytics_row
from db.repositories.intake import IntakeSessionRow, intake_session_row
from db.repositories.visualizations import VisualizationRow, visualization_row
from domain.vocabulary import VisualizationStatus


@dataclass(frozen=True)
class GalleryEntry:
    """An entry, its author's email and its visualization (None if never queued)."""

    email: str
    created_at: datetime
    situation: str
    emotions: tuple[str, ...]
    intensity: Decimal
    visualization: VisualizationRow | None


class ShowcaseRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- the demo ----------------------------------------------------------------

    def clear_visualizations_and_analytics(self) -> None:
        """Every visualization and analytics row, so the demo redraws every entry."""
        self.session.execute(delete(Visualization))
        self.session.execute(delete(EmotionAnalytics))

    def entry_ids_oldest_first(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(entry_id, user_id) of every entry, oldest first."""
        stmt = select(EmotionEntry.id, EmotionEntry.user_id).order_by(EmotionEntry.created_at)
        return [(row[0], row[1]) for row in self.session.execute(stmt)]

    def forget_intake_sessions(self, initial_situations: Sequence[str]) -> None:
        """The sessions opened with one of ``initial_situations``, and their entries."""
        owned = select(IntakeSession.id).where(
            IntakeSession.initial_situation.in_(list(initial_situations))
        )
        self.session.execute(delete(EmotionEntry).where(EmotionEntry.intake_session_id.in_(owned)))
        self.session.execute(
            delete(IntakeSession).where(
                IntakeSession.initial_situation.in_(list(initial_situations))
            )
        )

    def complete_intakes(self, session_ids: Sequence[uuid.UUID]) -> int:
        """How many of ``session_ids`` are complete."""
        stmt = (
            select(func.count())
            .select_from(IntakeSession)
            .where(IntakeSession.id.in_(list(session_ids)), IntakeSession.is_complete)
        )
        return int(self.session.scalar(stmt) or 0)

    def completion_seconds(self) -> tuple[float, float]:
        """(average, 95th percentile) seconds from a visualization row's creation to its
        completion, over the completed rows (0 when there are none)."""
        v = Visualization
        seconds = func.extract("epoch", v.processing_completed_at - v.created_at)
        row = self.session.execute(
            select(func.avg(seconds), func.percentile_cont(0.95).within_group(seconds)).where(
                v.status == VisualizationStatus.COMPLETED.value
            )
        ).one()
        return float(row[0] or 0), float(row[1] or 0)

    # --- the gallery -------------------------------------------------------------

    def gallery_entries(self) -> list[GalleryEntry]:
        """Every entry with its visualization, by author email, newest first."""
        stmt = (
            select(User.email, EmotionEntry, Visualization)
            .join(EmotionEntry, EmotionEntry.user_id == User.id)
            .outerjoin(Visualization, Visualization.entry_id == EmotionEntry.id)
            .order_by(User.email, EmotionEntry.created_at.desc())
        )
        return [
            GalleryEntry(
                email=email,
                created_at=entry.created_at,
                situation=entry.situation,
                emotions=tuple(entry.emotions),
                intensity=entry.intensity,
                visualization=None if viz is None else visualization_row(viz),
            )
            for email, entry, viz in self.session.execute(stmt)
        ]

    def conversations(self) -> list[tuple[IntakeSessionRow, VisualizationRow | None]]:
        """Every intake session, oldest first, with the visualization of its entry."""
        stmt = (
            select(IntakeSession, Visualization)
            .outerjoin(EmotionEntry, EmotionEntry.intake_session_id == IntakeSession.id)
            .outerjoin(Visualization, Visualization.entry_id == EmotionEntry.id)
            .order_by(IntakeSession.created_at)
        )
        return [
            (intake_session_row(session), None if viz is None else visualization_row(viz))
            for session, viz in self.session.execute(stmt)
        ]

    def analytics_by_email(self) -> list[tuple[str, AnalyticsRow]]:
        """Every analytics row with its user's email."""
        stmt = select(User.email, EmotionAnalytics).join(
            EmotionAnalytics, EmotionAnalytics.user_id == User.id
        )
        return [(email, analytics_row(row)) for email, row in self.session.execute(stmt)]
