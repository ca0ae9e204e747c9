"""Numbers that do not lie (issue 20): ``status``, ``status --watch``, the console and the
metrics read one snapshot per process (computed at most once per period, however many
readers), every count in it exact (completed work too, after ANALYZE), and the broker's
state is read by one collector per deployment: a machine whose peer holds the collector
role reads the stored state and never SCANs the keyspace itself.

Real PostgreSQL and Redis: the snapshot's reads, and read_broker_state's SCAN, run for
real; only the number of computations is counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from tests.integration.helpers import insert_entry, insert_user
from tests.integration.test_periodic_plans import realistic  # noqa: F401 - a fixture
from workers.messaging.broker_state import BrokerState, SharedBrokerState, read_broker_state
from workers.observability import snapshot
from workers.observability.collector import StateCollector
from workers.observability.snapshot import SnapshotCache

pytestmark = pytest.mark.integration


class Counted:
    """read_broker_state for real (its SCAN included), counted."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client, self.namespace, self.calls = client, namespace, 0
        self.lock = threading.Lock()

    def __call__(self) -> BrokerState:
        with self.lock:
            self.calls += 1
        return read_broker_state(self.client, self.namespace)


@pytest.fixture
def client(redis_server_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_server_url)


def _uow_factory(engine: Engine) -> Callable[[], UnitOfWork]:
    factory = make_session_factory(engine)
    return lambda: UnitOfWork(factory)


def test_readers_within_the_period_share_one_computation(
    engine: Engine, client: redis.Redis, redis_namespace: str
) -> None:
    cache = SnapshotCache(Counted(client, redis_namespace), _uow_factory(engine), max_age_s=1.0)
    start = threading.Barrier(8)
    seen: list[snapshot.Snapshot] = []

    def reader() -> None:
        start.wait()
        seen.append(cache.get())

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.get() is seen[0]
    assert cache.computations == 1, "eight readers within the period: one computation"
    assert not seen[0].errors and all(s is seen[0] for s in seen)
    time.sleep(1.05)
    cache.get()
    assert cache.computations == 2, "after the period, the next reader computes again"


def test_status_and_metrics_read_the_same_snapshot(
    engine: Engine, client: redis.Redis, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.operations.status import collect_status
    from workers.settings import Settings

    # What status reads besides the rows comes from the snapshot's database too: a
    # paused queue, a paid call today, a row waiting on its person's daily budget.
    with engine.begin() as conn:
        user = insert_user(conn)
        entry = insert_entry(conn, user)
        conn.execute(
            text("INSERT INTO paused_queues (name, paused_by) VALUES ('visualizations', 'ops')")
        )
        conn.execute(
            text(
                "INSERT INTO model_calls (user_id, model, kind, outcome, cost_usd) "
                "VALUES (:u, 'm', 'analysis', 'ok', 0.5)"
            ),
            {"u": user},
        )
        conn.execute(
            text(
                "INSERT INTO visualizations (entry_id, user_id, status, error_message, "
                "dispatched_at) VALUES (:e, :u, 'pending', "
                "'will retry: daily budget of $1.00 reached', now() + interval '1 hour')"
            ),
            {"e": entry, "u": user},
        )
        # Two analytics refreshes waiting, the oldest for 200 s: no refresher drains.
        conn.execute(
            text(
                "INSERT INTO analytics_refresh_queue (user_id, day, created_at) VALUES "
                "(:u, current_date, now() - interval '200 seconds'), (:u, current_date, now())"
            ),
            {"u": user},
        )
    cache = SnapshotCache(Counted(client, redis_namespace), _uow_factory(engine), max_age_s=60.0)
    monkeypatch.setattr(snapshot, "_shared", cache)
    status = collect_status(Settings(_env_file=None))  # type: ignore[call-arg]
    registry = CollectorRegistry()
    registry.register(StateCollector(snapshot.shared().get))
    exposed = generate_latest(registry).decode()
    collect_status(Settings(_env_file=None))  # type: ignore[call-arg]
    assert cache.computations == 1
    assert status["visualizations"] == {"pending": 1, "processing": 0, "failed": 0}
    assert [p["queue"] for p in status["paused_queues"]] == ["visualizations"]
    paid = status["paid_calls_today"]
    assert (paid["calls"], paid["people"], paid["waiting_on_budget"]) == (1, 1, 1)
    refresh = status["analytics_refresh"]
    assert refresh["queued"] == 2 and refresh["behind"] and 199 < refresh["oldest_age_s"] < 260
    assert "emotionviz_analytics_refresh_queued 2.0" in exposed
    assert "emotionviz_analytics_refresh_oldest_age_seconds 2" in exposed  # 2xx seconds


def test_completed_work_is_counted_exactly_after_analyze(
    engine: Engine, client: redis.Redis, redis_namespace: str
) -> None:
    """The gauge was the planner's estimate: after ANALYZE, rows completed since were
    missing from it. Now it is an exact count of the last hour's completions."""
    with engine.begin() as conn:
        user = insert_user(conn)

        def visualization(status: str) -> None:
            entry = insert_entry(conn, user)
            conn.execute(
                text(
                    "INSERT INTO visualizations (entry_id, user_id, status, "
                    "processing_completed_at) VALUES (:e, :u, CAST(:s AS text), "
                    "CASE WHEN CAST(:s AS text) IN ('completed', 'failed') THEN now() END)"
                ),
                {"e": entry, "u": user, "s": status},
            )

        for _ in range(5):
            visualization("completed")
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))
    with engine.begin() as conn:
        for status in ("completed", "completed", "completed", "pending", "failed"):
            visualization(status)
    cache = SnapshotCache(Counted(client, redis_namespace), _uow_factory(engine), max_age_s=0.0)
    rows = cache.get().rows
    assert rows is not None
    assert rows.finished_last_hour == {"completed": 8, "failed": 1}
    assert rows.open == {"pending": 1, "processing": 0, "failed": 1}
    registry = CollectorRegistry()
    registry.register(StateCollector(cache.get))
    exposed = generate_latest(registry).decode()
    assert 'emotionviz_visualizations_finished_last_hour{status="completed"} 8.0' in exposed
    assert 'emotionviz_visualizations{status="completed"}' not in exposed  # no estimate


def test_a_machine_does_not_scan_while_another_holds_the_collector_role(
    client: redis.Redis, redis_namespace: str
) -> None:
    machine_a, machine_b = Counted(client, redis_namespace), Counted(client, redis_namespace)
    a = SharedBrokerState(client, redis_namespace, machine_a, max_age_s=0.5)
    b = SharedBrokerState(client, redis_namespace, machine_b, max_age_s=0.5)

    first = a.get()
    assert machine_a.calls == 1
    assert b.get().queues == first.queues  # the stored state: no SCAN on machine B
    assert machine_b.calls == 0

    # The state is stale and A holds the role (it is reading): B serves the last state.
    time.sleep(0.6)
    client.set(b.role_key, "1", px=400)
    assert b.get().queues == first.queues
    assert machine_b.calls == 0

    # The role expired (its holder died mid-read): B takes it over and reads.
    time.sleep(0.45)
    b.get()
    assert machine_b.calls == 1 and machine_a.calls == 1


def test_budget_waits_are_read_through_the_pending_dispatch_index(
    realistic: Engine,  # noqa: F811 - the fixture imported above
) -> None:
    """The snapshot's count of rows waiting on a daily budget read every pending row's
    reason; now only the pending rows due in the future (idx_visualizations_pending_
    dispatch), whatever the number of pending rows."""
    from db.repositories.ledger import _BUDGET_WAITS

    with realistic.begin() as conn:  # most pending rows are due; two wait on a budget
        conn.execute(
            text(
                "UPDATE visualizations SET dispatched_at = now() - interval '1 hour' "
                "WHERE status = 'pending'"
            )
        )
        conn.execute(
            text(
                "UPDATE visualizations SET dispatched_at = now() + interval '5 hours', "
                "error_message = 'will retry: daily budget of $1.00 reached' "
                "WHERE id IN (SELECT id FROM visualizations WHERE status = 'pending' LIMIT 2)"
            )
        )
    with realistic.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE visualizations"))
    raw = realistic.raw_connection()
    try:
        with raw.cursor() as cursor:
            sql = _BUDGET_WAITS.replace("%%", "%")
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
            nodes = [cursor.fetchone()[0][0]["Plan"]]
            while nodes[-1].get("Plans"):
                nodes.append(nodes[-1]["Plans"][0])
            cursor.execute(sql)
            assert cursor.fetchone()[0] == 2
    finally:
        raw.close()
    # A range of the index (the rows due in the future), not a walk of every pending row.
    scan = nodes[-1]
    assert scan.get("Index Name") == "idx_visualizations_pending_dispatch", nodes
    assert "dispatched_at > now()" in scan.get("Index Cond", ""), scan
