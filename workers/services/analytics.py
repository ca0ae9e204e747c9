"""analytics.recompute: set-based recomputation of emotion_analytics, batched by user so
no transaction runs long.

Users are split into LANES by id (a fixed hash); a batch holds users of one lane, and
takes a transaction-level advisory lock on (period kind, lane). So batches of different
lanes run in parallel (they touch disjoint users), while two batches that could touch
the same user, from one run or two overlapping runs, queue instead of interleaving.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date
from itertools import zip_longest

from db.uow import UnitOfWork
from domain.messages import AnalyticsRecompute
from domain.periods import PeriodKind, period_containing

USER_BATCH = 500
LANES = 16


def lane_of(user_id: uuid.UUID) -> int:
    return user_id.int % LANES


def plan_batches(users: Iterable[uuid.UUID], size: int = USER_BATCH) -> list[list[uuid.UUID]]:
    """Batches of at most ``size`` users, each within one lane, lanes taken in turn (so
    that consecutive batches can run in parallel)."""
    lanes: dict[int, list[uuid.UUID]] = {}
    for user in sorted(set(users)):
        lanes.setdefault(lane_of(user), []).append(user)
    per_lane = [
        [members[i : i + size] for i in range(0, len(members), size)]
        for _, members in sorted(lanes.items())
    ]
    return [batch for round_ in zip_longest(*per_lane) for batch in round_ if batch]


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
    uow_factory: Callable[[], UnitOfWork],
    message: AnalyticsRecompute,
    *,
    on_batch: Callable[[int, int], None] | None = None,
    parallel: int = 1,
) -> RecomputeSummary:
    """Recompute the message's range; ``parallel`` batches at a time (one connection
    each). ``on_batch(users, rows so far)`` is called in the caller's thread."""
    kind: PeriodKind = message.period
    first = period_containing(kind, message.period_start)
    last = period_containing(kind, message.period_end or message.period_start)
    end = last.end_exclusive
    with uow_factory() as uow:
        users: list[uuid.UUID] = list(message.user_ids or uow.users.list_ids())
    batches = plan_batches(users)

    def run_batch(batch: list[uuid.UUID]) -> int:
        with uow_factory() as uow:
            uow.analytics.lock_lane(kind, lane_of(batch[0]))
            written = uow.analytics.recompute(kind, batch, first.start, end)
            uow.commit()
        return written

    rows = 0
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        futures = {pool.submit(run_batch, batch): len(batch) for batch in batches}
        try:
            for future in as_completed(futures):
                rows += future.result()
                if on_batch:
                    on_batch(futures[future], rows)
        except BaseException:
            # Fail fast: batches not started yet are dropped (committed ones stay, and
            # are idempotent to redo); the error goes to the caller.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return RecomputeSummary(kind, first.start, end, len(users), rows, len(batches))
