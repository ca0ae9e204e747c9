"""analytics.recompute: set-based recomputation of emotion_analytics, batched by user so
no transaction runs long.

Users are split into LANES by id (a fixed hash); a batch holds users of one lane, and
takes a transaction-level advisory lock on (period kind, lane). So batches of different
lanes run in parallel (they touch disjoint users), while two batches that could touch
the same user, from one run or two overlapping runs, queue instead of interleaving.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import date
from itertools import zip_longest

from db.uow import UnitOfWork
from domain.analytics import STREAK_CAP, shift_periods
from domain.messages import AnalyticsRecompute
from domain.periods import PERIOD_KINDS, PeriodKind, period_containing

USER_BATCH = 500
LANES = 16
# Users read per planning page (keyset on users.id): about USER_BATCH per lane.
PLAN_PAGE = USER_BATCH * LANES
# Queued refreshes handled per transaction by drain_analytics_refresh_queue.
DRAIN_BATCH = 500
# Past this many distinct ranges of one kind in a drain batch, one statement over the
# union of the ranges for all its users (a bulk delete spread over many days): at
# worst a full recompute of DRAIN_BATCH users, instead of hundreds of statements.
DRAIN_MAX_STATEMENTS = 8


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


def plan_recompute(
    uow_factory: Callable[[], UnitOfWork], message: AnalyticsRecompute, *, page: int = PLAN_PAGE
) -> Iterator[list[AnalyticsRecompute]]:
    """``message`` split into one message per batch of users (``plan_batches``), a list
    per page of users: the fan-out of the CLI and of the scheduler. Each batch message
    is idempotent (a recompute of its users and range), so a page published twice (a
    publish retried after a partial failure) only costs time.

    With ``message.user_ids``, those users; else every user, paged by id with keyset
    pagination on the users' primary key (one short read per page; the planning never
    reads emotion_entries, and holds one page in memory at a time)."""

    def batches(users: list[uuid.UUID]) -> list[AnalyticsRecompute]:
        return [
            AnalyticsRecompute(
                period=message.period,
                period_start=message.period_start,
                period_end=message.period_end,
                user_ids=batch,
            )
            for batch in plan_batches(users)
        ]

    if message.user_ids:
        yield batches(message.user_ids)
        return
    after: uuid.UUID | None = None
    while True:
        with uow_factory() as uow:
            users = uow.analytics.user_ids_after(after, page)
        if users:
            yield batches(users)
        if len(users) < page:
            return
        after = users[-1]


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


def ordered_lanes(lanes: Iterable[int]) -> list[tuple[PeriodKind, int]]:
    """The lane locks of ``lanes`` for every period kind, in the one order every holder
    of several takes them: kind by kind (PERIOD_KINDS), lanes ascending."""
    distinct = sorted(set(lanes))
    return [(kind, lane) for kind in PERIOD_KINDS for lane in distinct]


def refresh_ranges(
    days_by_user: dict[uuid.UUID, set[date]], kind: PeriodKind
) -> dict[tuple[date, date], list[uuid.UUID]]:
    """Users by the range of ``kind`` periods [first, end) to recompute after entries of
    theirs on ``days`` changed: each day's period and the STREAK_CAP periods after it
    (their comparisons and streaks depend on it), as ``refresh_for_entry`` does, merged
    into one range per user. Users whose ranges coincide (the common case: changes of
    the same day) share one statement."""
    groups: dict[tuple[date, date], list[uuid.UUID]] = {}
    for user, days in sorted(days_by_user.items()):
        starts = [period_containing(kind, day).start for day in days]
        first, last = min(starts), max(starts)
        groups.setdefault((first, shift_periods(kind, last, STREAK_CAP + 1)), []).append(user)
    return groups


def drain_analytics_refresh_queue(uow_factory: Callable[[], UnitOfWork], limit: int) -> int:
    """Refresh the analytics of entries deleted or edited since the last pass, and
    return how many queued rows were done (at most ``limit``).

    The queue (analytics_refresh_queue) is filled by triggers on emotion_entries in the
    upstream's own transaction, one row per person and UTC day changed. Batches of
    DRAIN_BATCH rows, each one transaction: take the oldest rows with FOR UPDATE SKIP
    LOCKED (a runner beside us takes other rows, never ours), recompute the affected
    periods of those people exactly as a full recompute would (empty periods lose
    their row), delete the rows, commit. A crash rolls the batch back and leaves its
    rows queued; redoing one is harmless (the recompute is idempotent). The lane locks
    of the nightly recompute are held for the users concerned, so a batch recomputes
    after any concurrent batch touching the same people has committed, and sees its
    changes. Called by the periodic maintenance pass (workers/services/reconcile.py).
    """
    done = 0
    while done < limit:
        size = min(DRAIN_BATCH, limit - done)
        with uow_factory() as uow:
            taken = uow.analytics.take_queued_refreshes(size)
            if not taken:
                break
            days_by_user: dict[uuid.UUID, set[date]] = {}
            for item in taken:
                days_by_user.setdefault(item.user_id, set()).add(item.day)
            # Every lane the batch's people are in, of every kind, in one statement.
            uow.analytics.lock_lanes(ordered_lanes(lane_of(u) for u in days_by_user))
            for kind in PERIOD_KINDS:
                ranges = refresh_ranges(days_by_user, kind)
                if len(ranges) > DRAIN_MAX_STATEMENTS:
                    first = min(first for first, _ in ranges)
                    end = max(end for _, end in ranges)
                    ranges = {(first, end): sorted(days_by_user)}
                for (first, end), users in ranges.items():
                    uow.analytics.recompute(kind, users, first, end)
            uow.analytics.delete_queued_refreshes(item.id for item in taken)
            uow.commit()
        done += len(taken)
        if len(taken) < size:
            break
    return done
