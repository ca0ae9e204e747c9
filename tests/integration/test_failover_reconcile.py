"""The reconcile after a Redis failover (issue 22.1) on real PostgreSQL and Redis: it
publishes again exactly the pending rows dispatched in the window before the failover
(not older ones, not finished ones, not ones sent after it), at once and whatever the
grace; a second pass finds nothing; it waits for a reconcile that holds the lock."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta

import dramatiq
import pytest
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.repositories.reconcile import RECONCILE_LOCK_KEY
from db.uow import UnitOfWork
from tests.integration.helpers import insert_entry, insert_user
from tests.integration.test_reconcile import _drop_queue, _queued
from workers.messaging.producer import Producer
from workers.producer_api import ProducerAPI
from workers.services.reconcile import BATCH, reconcile_after_failover

pytestmark = pytest.mark.integration
LOOKBACK_S = 120


@pytest.fixture
def producer(broker: dramatiq.Broker) -> Producer:
    return Producer(broker)


@pytest.fixture
def uow_factory(engine: Engine, producer: Producer) -> Callable[[], UnitOfWork]:
    factory = make_session_factory(engine)
    return lambda: UnitOfWork(factory, producer)


def _published(
    engine: Engine, uow_factory: Callable[[], UnitOfWork], n: int, ago_s: int
) -> list[uuid.UUID]:
    """``n`` entries whose message left ``ago_s`` seconds ago."""
    with engine.begin() as conn:
        user = insert_user(conn)
        entries = [insert_entry(conn, user) for _ in range(n)]
    api = ProducerAPI(uow_factory)
    for entry_id in entries:
        api.entry_created(entry_id, user)
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE visualizations SET dispatched_at = now() - make_interval(secs => :s) "
                "WHERE entry_id = ANY(:ids)"
            ),
            {"s": ago_s, "ids": entries},
        )
    return entries


def _now(engine: Engine) -> datetime:
    with engine.connect() as conn:
        return conn.execute(text("SELECT now()")).scalar_one()  # type: ignore[no-any-return]


def test_only_the_window_before_the_failover_is_published_again(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    old = _published(engine, uow_factory, 2, ago_s=LOOKBACK_S + 300)  # replicated long ago
    lost = _published(engine, uow_factory, 3, ago_s=40)  # just before the failover
    done = _published(engine, uow_factory, 1, ago_s=40)
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE visualizations SET status = 'completed' WHERE entry_id = ANY(:ids)"),
            {"ids": done},
        )
    after = _published(engine, uow_factory, 2, ago_s=0)  # sent to the new primary
    _drop_queue(producer)  # the failover took the queue's messages with it
    seen_at = _now(engine) - timedelta(seconds=20)

    report = reconcile_after_failover(uow_factory, seen_at=seen_at, lookback_s=LOOKBACK_S)

    assert not report.skipped
    assert report.unfinished == len(lost)
    queued = {uuid.UUID(m["entry_id"]) for m in _queued(producer)}
    assert queued == set(lost), (queued, set(old), set(after))
    # Republished now, after the window: a second pass (another worker) sends nothing.
    again = reconcile_after_failover(uow_factory, seen_at=seen_at, lookback_s=LOOKBACK_S)
    assert again.unfinished == 0 and len(_queued(producer)) == len(lost)


def test_it_reports_skipped_while_another_reconcile_holds_the_lock(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    with engine.connect() as holder, holder.begin():
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RECONCILE_LOCK_KEY})
        report = reconcile_after_failover(uow_factory, seen_at=_now(engine), lookback_s=LOOKBACK_S)
    assert report.skipped


def test_a_failover_seen_now_republishes_each_lost_row_once_over_many_batches(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    """The production case: the reconcile starts right after the failover is seen, so
    its own republishes (dispatched now) fall inside the window's margin. More rows than
    one batch: each batch must find the next rows, never the ones just sent (before the
    fix: 5,000 messages for these 250 rows)."""
    lost = _published(engine, uow_factory, 2 * BATCH + BATCH // 2, ago_s=3)
    _drop_queue(producer)
    seen_at = _now(engine)

    report = reconcile_after_failover(uow_factory, seen_at=seen_at, lookback_s=LOOKBACK_S)

    per_entry = Counter(uuid.UUID(m["entry_id"]) for m in _queued(producer))
    assert report.unfinished == len(lost), report
    assert per_entry == Counter(lost)  # each lost row once, nothing else
    # Another pass for the same failover (a retry, another process) sends nothing.
    again = reconcile_after_failover(uow_factory, seen_at=seen_at, lookback_s=LOOKBACK_S)
    assert again.unfinished == 0, again
    assert len(_queued(producer)) == len(lost)


def test_a_row_dispatched_while_the_pass_runs_is_left_alone(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    """The window ends when the pass began: what a producer sends meanwhile went to
    the new primary, inside the window's margin but not republished."""
    lost = _published(engine, uow_factory, BATCH + 10, ago_s=3)
    _drop_queue(producer)
    during: list[uuid.UUID] = []
    opened = 0

    def factory() -> UnitOfWork:
        nonlocal opened
        opened += 1
        if opened == 3:  # the guard, the first batch (and its mark), then: a new entry
            with engine.begin() as conn:
                user = insert_user(conn)
                during.append(insert_entry(conn, user))
            ProducerAPI(uow_factory).entry_created(during[0], user)
        return uow_factory()

    report = reconcile_after_failover(factory, seen_at=_now(engine), lookback_s=LOOKBACK_S)

    assert during, "the pass ran in several batches"
    per_entry = Counter(uuid.UUID(m["entry_id"]) for m in _queued(producer))
    assert report.unfinished == len(lost), report
    assert per_entry == Counter([*lost, during[0]])  # its one message: the producer's
