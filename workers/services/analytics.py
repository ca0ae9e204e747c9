"""analytics.recompute: set-based recomputation of emotion_analytics, batched by user so
no run holds long locks; serialised per period kind with a transaction-level advisory
lock, so two overlapping runs never interleave their upserts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import text

from db.uow import UnitOfWork
from domain.messages import AnalyticsRecompute
from domain.periods import PeriodKind, period_containing
from workers import runtime

USER_BATCH = 500


@dataclass(frozen=True)
class RecomputeSummary:
    period: str
    first_period: date
    end: date
    users: int
    rows: int
    batches: int

    def as_log(self) -> dict[str, object]:
        return {
            "period": self.period,
            "from": str(self.first_period),
            "to": str(self.end),
            "users": self.users,
            "rows": self.rows,
            "batches": self.batches,
        }


def recompute(
    message: AnalyticsRecompute, *, on_batch: Callable[[int, int], None] | None = None
) -> RecomputeSummary:
    return recompute_with(runtime.unit_of_work, message, on_batch=on_batch)


def recompute_with(
    uow_factory: Callable[[], UnitOfWork],
    message: AnalyticsRecompute,
    *,
    on_batch: Callable[[int, int], None] | None = None,
) -> RecomputeSummary:
    kind: PeriodKind = message.period
    first = period_containing(kind, message.period_start)
    last = period_containing(kind, message.period_end or message.period_start)
    end = last.end_exclusive
    with uow_factory() as uow:
        users: list[uuid.UUID] = list(message.user_ids or uow.users.list_ids())
    rows = batches = 0
    for start in range(0, len(users), USER_BATCH):
        batch = users[start : start + USER_BATCH]
        with uow_factory() as uow:
            # Overlapping runs of one period kind queue here instead of interleaving.
            uow.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext('emotion_analytics:' || :k))"),
                {"k": kind},
            )
            rows += uow.analytics.recompute(kind, batch, first.start, end)
            uow.commit()
        batches += 1
        if on_batch:
            on_batch(len(batch), rows)
    return RecomputeSummary(kind, first.start, end, len(users), rows, batches)
