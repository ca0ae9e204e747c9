"""Visualizations: the row per entry, its lease (renewal, release, failure) and the
operators' views (replay, stuck, counts). The claim, the checkpoint and the completion
are the per-entry path's, in db/repositories/entry_pipeline.py (the one claim).

Writes under a lease are compare-and-set on (status, processing_started_at): a worker
whose lease was taken over writes nothing. The lease runs until ``lease_expires_at``,
which the holder's heartbeat renews; a dead worker stops renewing, and its row can be
claimed again as soon as the lease runs out.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func, select, text, update
from sqlalchemy.orm import Session

from db.models import Visualization
from domain.vocabulary import VisualizationStatus, VisualizationStyle

DEFAULT_STYLE = VisualizationStyle.ABSTRACT.value  # the column's default
# Statuses a row leaves (failed: by a replay): few rows at any time, counted exactly.
OPEN_STATUSES = (
    VisualizationStatus.PENDING.value,
    VisualizationStatus.PROCESSING.value,
    VisualizationStatus.FAILED.value,
)


@dataclass(frozen=True)
class VisualizationRow:
    """A visualization as read (without the raw model responses)."""

    id: uuid.UUID
    entry_id: uuid.UUID
    user_id: uuid.UUID
    status: str
    style: str
    image_url: str | None
    thumbnail_url: str | None
    summary: str | None
    insights: list[str]
    error_message: str | None
    processing_started_at: datetime | None
    processing_completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


def visualization_row(v: Visualization) -> VisualizationRow:
    return VisualizationRow(
        id=v.id,
        entry_id=v.entry_id,
        user_id=v.user_id,
        status=v.status,
        style=v.style,
        image_url=v.image_url,
        thumbnail_url=v.thumbnail_url,
        summary=v.summary,
        insights=list(v.insights or []),
        error_message=v.error_message,
        processing_started_at=v.processing_started_at,
        processing_completed_at=v.processing_completed_at,
        created_at=v.created_at,
        updated_at=v.updated_at,
    )


@dataclass(frozen=True)
class ClaimedVisualization:
    """A visualization row this worker holds the lease on (``lease`` is its token)."""

    id: uuid.UUID
    lease: datetime
    style: str
    gemini_analysis: dict[str, Any] | None
    image_url: str | None
    claim_count: int = 1  # claims in a row that never finished, this one included


def _seconds(value: int) -> Any:
    return text(f"interval '{int(value)} seconds'")


def _seconds_float(value: float) -> Any:
    return func.make_interval(0, 0, 0, 0, 0, 0, max(0.0, float(value)))


# Core (not ORM-enabled) statements on the table: cheaper than the ORM's bulk updates.
_TABLE: Table = Visualization.__table__  # type: ignore[assignment]


class VisualizationRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get_by_entry(self, entry_id: uuid.UUID) -> VisualizationRow | None:
        row = self.session.scalar(select(Visualization).where(Visualization.entry_id == entry_id))
        return None if row is None else visualization_row(row)

    def _held(self, claim: ClaimedVisualization) -> Any:
        c = _TABLE.c
        return (
            update(_TABLE)
            .where(c.id == claim.id)
            .where(c.status == VisualizationStatus.PROCESSING.value)
            .where(c.processing_started_at == claim.lease)
        )

    def release(self, claim: ClaimedVisualization, reason: str, retry_in_s: float = 0.0) -> bool:
        """Give the lease back after a transient failure, keeping the last error. The
        retry's message is due in ``retry_in_s`` (a quota's delay): the row counts as
        dispatched then, so the reconciler leaves it alone while the delay runs."""
        result = self.session.execute(
            self._held(claim).values(
                status=VisualizationStatus.PENDING.value,
                processing_started_at=None,
                lease_expires_at=None,
                claim_count=0,  # the claim ended: not a crash
                error_message=f"will retry: {reason}",
                dispatched_at=func.now()
                + func.make_interval(0, 0, 0, 0, 0, 0, max(0.0, retry_in_s)),
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def fail(self, entry_id: uuid.UUID, reason: str, lease: datetime | None = None) -> bool:
        """Mark failed: a pending row, a row under ``lease`` (the failing job's own, if
        it still holds one) or a row whose lease ran out (nobody holds it live). Never a
        row another worker holds live (its job may yet complete: a late delivery's
        failure must not throw its paid result away), nor a finished one (completed, or
        failed already)."""
        v = Visualization
        nobody_live = func.coalesce(v.lease_expires_at, v.processing_started_at) < func.now()
        if lease is not None:
            nobody_live = nobody_live | (v.processing_started_at == lease)
        result = self.session.execute(
            update(v)
            .where(v.entry_id == entry_id)
            .where(
                (v.status == VisualizationStatus.PENDING.value)
                | ((v.status == VisualizationStatus.PROCESSING.value) & nobody_live)
            )
            .values(
                status=VisualizationStatus.FAILED.value,
                error_message=reason,
                processing_completed_at=func.now(),
                lease_expires_at=None,
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
            lease_expires_at=None,
            claim_count=0,  # an operator's replay gives a crash-looping entry a new start
        ).returning(v.entry_id, v.user_id, v.style)
        return [(r[0], r[1], r[2]) for r in self.session.execute(stmt)]

    def _expired(self) -> Any:
        v = Visualization
        return (v.status == VisualizationStatus.PROCESSING.value) & (
            func.coalesce(v.lease_expires_at, v.processing_started_at) < func.now()
        )

    def stuck_count(self) -> int:
        """Rows processing past their lease (their worker died or hangs)."""
        v = Visualization
        stmt = select(func.count()).select_from(v).where(self._expired())
        return int(self.session.scalar(stmt) or 0)

    def recent_failure_reasons(self, seconds: int, limit: int = 10_000) -> list[str]:
        """error_message of the rows failed in the last ``seconds`` (a range of the
        finished rows' index: the last hour's failures only, however many failed ever)."""
        v = Visualization
        stmt = (
            select(v.error_message)
            .where(v.status == VisualizationStatus.FAILED.value)
            .where(v.processing_completed_at > func.now() - _seconds(seconds))
            .limit(limit)
        )
        return [reason or "" for reason in self.session.scalars(stmt)]

    def open_status_counts(self) -> dict[str, int]:
        """Rows pending, processing and failed, exact: an index-only count of those
        statuses in the status index (a few rows in every hundred), never the
        completed ones (most of the table)."""
        v = Visualization
        counts = {status: 0 for status in OPEN_STATUSES}
        rows = self.session.execute(
            select(v.status, func.count()).where(v.status.in_(OPEN_STATUSES)).group_by(v.status)
        )
        counts.update({status: int(n) for status, n in rows})
        return counts

    def finished_since(self, seconds: int) -> dict[str, int]:
        """Rows completed and failed in the last ``seconds``, exact: a range of the
        finished rows' index (idx_visualizations_finished_at). How operators see
        completed work (an all-time count of completed rows would read most of the
        table; the planner's estimate of it is not a count)."""
        v = Visualization
        finished = [VisualizationStatus.COMPLETED.value, VisualizationStatus.FAILED.value]
        counts = {status: 0 for status in finished}
        rows = self.session.execute(
            select(v.status, func.count())
            .where(v.status.in_(finished))
            .where(v.processing_completed_at > func.now() - _seconds(seconds))
            .group_by(v.status)
        )
        counts.update({status: int(n) for status, n in rows})
        return counts

    def status_counts(self) -> dict[str, int]:
        """Every row by status, exact: reads the whole status index (the demo's small
        database; operators' views use open_status_counts and finished_since)."""
        v = Visualization
        rows = self.session.execute(select(v.status, func.count()).group_by(v.status))
        return {status: count for status, count in rows}
