"""The reconciler: PostgreSQL is the source of truth, messages are nudges. If the broker
lost messages, or a worker died holding a lease, this finds the work in the database
and publishes it again.

It never floods (docs/reliability.md, "The reconciler"):
- a pending row is republished only when its last message left more than the grace
  window ago (``dispatched_at``, recorded by every publish) and before the oldest
  message still waiting in the queue: a FIFO queue still holds every message sent after
  its head, so a backlog of any age behind a quota is left alone;
- a row released to wait out a quota delay is dispatched "when its retry is due";
- a processing row is republished once when its lease runs out, then at most once per
  grace window;
- one reconcile runs at a time across every machine (an advisory lock);
- each pass is bounded (``limit``) and reads only the unfinished rows, by index.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from db.repositories.reconcile import WindowCursor
from db.uow import UnitOfWork
from domain.errors import BrokerUnavailableError
from domain.messages import EntryCreated, IntakeStep, MessageV1
from domain.vocabulary import VisualizationStyle

# The queue head's time comes from the publisher's clock, a row's dispatch from the
# database's: a margin for their skew and for the time between a commit and its publish.
CLOCK_MARGIN = timedelta(seconds=60)
# A failover's window is set by a worker's clock, the dispatches by the database's.
FAILOVER_MARGIN = timedelta(seconds=5)
DEFAULT_LIMIT = 5000
# Rows per transaction: each statement of a batch stays within ~50 ms at ten million
# rows (docs/benchmarks.md; recording 5,000 dispatches in one took 961 ms, 250 took 66:
# each row's dispatch time is an index key, so its update touches every index).
BATCH = 100


def nothing_queued() -> float:
    """For a broker that cannot tell what it holds: the grace window alone decides."""
    return math.inf


@dataclass(frozen=True)
class ReconcileReport:
    unfinished: int
    stuck: int
    intake: int
    adopted: int = 0  # entries that had no visualization row (counted in unfinished)
    skipped: bool = False  # another reconcile held the lock
    analytics_refreshed: int = 0  # people x days whose entries upstream edited or deleted

    def as_log(self) -> dict[str, object]:
        return {
            "republished_unfinished": self.unfinished,
            "republished_stuck": self.stuck,
            "republished_intake_steps": self.intake,
        }

    def summary(self) -> dict[str, object]:
        return {
            **self.as_log(),
            "adopted_without_row": self.adopted,
            "analytics_refreshed": self.analytics_refreshed,
            "skipped": self.skipped,
        }


def reconcile(
    uow_factory: Callable[[], UnitOfWork],
    *,
    grace_s: int,
    broker_lost_data: Callable[[], bool] = lambda: False,
    queued_since: Callable[[], float] = nothing_queued,
    limit: int = DEFAULT_LIMIT,
    batch: int = BATCH,
) -> ReconcileReport:
    """Republish entries whose message was lost, rows whose lease ran out, and intake
    turns whose message was lost: at most ``limit`` of each kind, in transactions of at
    most ``batch`` (each statement stays short on a table of ten million rows; a batch's
    rows are marked dispatched when it commits, so the next batch finds the next ones).

    ``queued_since()`` is when the oldest message still waiting in the visualizations
    queue was sent (epoch seconds; ``math.inf`` when none waits or the broker cannot
    tell). When the broker lost its data since the last run (a flush, a restart without
    persistence), no message is waiting for anything: everything unfinished is
    republished at once, delays and grace included."""
    lost = broker_lost_data()
    head = queued_since()
    total = ReconcileReport(0, 0, 0)
    # The pass lock lives in a transaction of its own for the whole pass (the batches
    # commit one by one); a row a batch republished is dispatched after the pass began,
    # so no later batch of this pass takes it again, whatever the grace.
    with uow_factory() as guard:
        if not guard.reconcile.try_lock():
            return dataclasses.replace(total, skipped=True)
        pass_started = guard.reconcile.database_now()
        first = True
        while True:
            size = min(batch, limit - max(total.unfinished, total.stuck, total.adopted))
            done = _one_batch(uow_factory, grace_s, lost, head, pass_started, size, intake=first)
            total = ReconcileReport(
                total.unfinished + done.unfinished,
                total.stuck + done.stuck,
                total.intake + done.intake,
                adopted=total.adopted + done.adopted,
            )
            first = False
            full = max(done.unfinished, done.stuck, done.adopted) >= size
            if not full or max(total.unfinished, total.stuck, total.adopted) >= limit:
                return total


def _one_batch(
    uow_factory: Callable[[], UnitOfWork],
    grace_s: int,
    lost: bool,
    head: float,
    pass_started: datetime,
    size: int,
    *,
    intake: bool,
) -> ReconcileReport:
    with uow_factory() as uow:
        repo = uow.reconcile
        adopted = repo.adopt_arrivals(0 if lost else grace_s, size)
        sent_before = min(_sent_before(repo.database_now(), grace_s, head, lost), pass_started)
        unfinished = repo.due_pending(sent_before, size)
        stuck = repo.due_stuck(0 if lost else grace_s, size, sent_before=pass_started)
        # Intake turns: once a pass, and each turn marked as sent (its session's
        # updated_at), so it is sent again only after another grace window.
        turns = uow.intake.due_turns(0 if lost else grace_s, size) if intake else []
        if turns:
            uow.intake.touch([s for s, _, _ in turns])
        messages: list[MessageV1] = [
            EntryCreated(entry_id=e.entry_id, user_id=e.user_id, style=VisualizationStyle(e.style))
            for e in unfinished + stuck
        ]
        messages += [IntakeStep(session_id=s, user_id=u, step=n) for s, u, n in turns]
        for message in messages:
            uow.publish(message)
        uow.commit()
    if uow.publish_error:  # publishing is this job's whole point: retried by the caller
        raise BrokerUnavailableError(f"reconcile could not publish: {uow.publish_error}")
    return ReconcileReport(len(unfinished), len(stuck), len(turns), adopted=adopted)


def _sent_before(now: datetime, grace_s: int, queued_since: float, lost: bool) -> datetime:
    if lost:  # even rows waiting out a delay: the broker holds nothing for them
        return datetime.max.replace(tzinfo=UTC)
    bound = now - timedelta(seconds=grace_s)
    if math.isfinite(queued_since):
        head = datetime.fromtimestamp(queued_since, UTC) - CLOCK_MARGIN
        bound = min(bound, head)
    return bound


def reconcile_after_failover(
    uow_factory: Callable[[], UnitOfWork],
    *,
    seen_at: datetime,
    lookback_s: int,
    limit: int = DEFAULT_LIMIT,
    batch: int = BATCH,
) -> ReconcileReport:
    """After a Redis failover seen at ``seen_at``: publish again every pending row whose
    message left within ``lookback_s`` before it (asynchronous replication may have
    lost it with the old primary, or the publish was refused while no primary was
    named), and give a row to entries that arrived without one. A row whose message
    did survive gets two: the claim is idempotent, the second finds it taken or done.
    Older rows were replicated long before; the periodic pass keeps watching them.
    Returns ``skipped`` when another reconcile holds the lock (the caller tries again).

    Each row is published once per failover, however many batches the window takes:
    the window ends when the pass began (the database's clock), if that is before
    ``seen_at`` + FAILOVER_MARGIN, so neither this pass's republishes (dispatched now)
    nor what producers send meanwhile (to the new primary) fall in it; the batches walk
    the window forward by (dispatched_at, entry_id); and each published batch is
    recorded as dispatched at ``seen_at`` + FAILOVER_MARGIN (at most FAILOVER_MARGIN
    after the pass began), so that another pass for the same failover (a retry after
    an error) sends none of them again; the periodic pass waits its grace from there.
    Such a pass may send again what producers dispatched during the first one's
    margin: a duplicate the claim absorbs."""
    since = seen_at - timedelta(seconds=lookback_s) - FAILOVER_MARGIN
    total = ReconcileReport(0, 0, 0)
    with uow_factory() as guard:
        if not guard.reconcile.try_lock():
            return dataclasses.replace(total, skipped=True)
        pass_started = guard.reconcile.database_now()
        before = min(seen_at + FAILOVER_MARGIN, pass_started)
        # Never before the window's end; a few seconds ahead at most, whatever a
        # worker's clock says.
        mark = min(seen_at + FAILOVER_MARGIN, pass_started + FAILOVER_MARGIN)
        cursor: WindowCursor | None = None
        while total.unfinished < limit:
            with uow_factory() as uow:
                adopted = uow.reconcile.adopt_arrivals(0, batch)
                due, cursor = uow.reconcile.due_pending_between(
                    since, before, min(batch, limit - total.unfinished), after=cursor
                )
                for e in due:
                    uow.publish(
                        EntryCreated(
                            entry_id=e.entry_id,
                            user_id=e.user_id,
                            style=VisualizationStyle(e.style),
                        )
                    )
                uow.commit()
            if uow.publish_error:  # unmarked: a retry sends them all again
                raise BrokerUnavailableError(f"reconcile could not publish: {uow.publish_error}")
            if due:  # committed and published: mark them for another pass
                with uow_factory() as marking:
                    marking.reconcile.mark_dispatched_from([e.entry_id for e in due], mark)
                    marking.commit()
            total = ReconcileReport(
                total.unfinished + len(due), 0, 0, adopted=total.adopted + adopted
            )
            if len(due) < batch and adopted < batch:
                return total
    return total
