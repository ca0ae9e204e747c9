"""The reconciler on real PostgreSQL and Redis: it never floods a backlog, republishes a
lost message once per grace window, waits out quota delays, keeps the requested style,
adopts entries that never got a row (whatever their date), runs one at a time, and
reads only by index."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
import psycopg
import pytest
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.repositories import ClaimedVisualization
from db.repositories.reconcile import (
    ADOPT_ARRIVALS,
    DUE_PENDING,
    DUE_STUCK,
    RECONCILE_LOCK_KEY,
)
from db.uow import UnitOfWork
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import insert_entry, insert_user
from workers.messaging.producer import Producer
from workers.messaging.queue_head import queue_head_sent_at
from workers.messaging.redis_keys import queue_keys
from workers.producer_api import ProducerAPI
from workers.services.reconcile import ReconcileReport, reconcile

pytestmark = pytest.mark.integration
GRACE_S = 300


@pytest.fixture
def producer(broker: dramatiq.Broker) -> Producer:
    return Producer(broker)


@pytest.fixture
def uow_factory(engine: Engine, producer: Producer) -> Callable[[], UnitOfWork]:
    factory = make_session_factory(engine)
    return lambda: UnitOfWork(factory, producer)


def _queued(producer: Producer) -> list[dict[str, Any]]:
    """Bodies waiting on the visualizations queue, oldest first."""
    client = producer.broker.client  # type: ignore[attr-defined]
    keys = queue_keys(producer.broker.namespace, "visualizations")  # type: ignore[attr-defined]
    return [
        json.loads(client.hget(keys.ready_bodies, i))["args"][0]
        for i in client.lrange(keys.ready, 0, -1)
    ]


def _drop_queue(producer: Producer) -> None:
    """The broker loses every message of the queue (what the reconciler exists for)."""
    client = producer.broker.client  # type: ignore[attr-defined]
    keys = queue_keys(producer.broker.namespace, "visualizations")  # type: ignore[attr-defined]
    client.delete(keys.ready, keys.ready_bodies)


def _run(
    uow_factory: Callable[[], UnitOfWork], producer: Producer, **kwargs: Any
) -> ReconcileReport:
    broker = producer.broker
    return reconcile(
        uow_factory,
        grace_s=kwargs.pop("grace_s", GRACE_S),
        queued_since=lambda: queue_head_sent_at(
            broker.client,  # type: ignore[attr-defined]
            broker.namespace,  # type: ignore[attr-defined]
            "visualizations",
        ),
        **kwargs,
    )


def _entries(engine: Engine, n: int, **kwargs: Any) -> list[tuple[uuid.UUID, uuid.UUID]]:
    with engine.begin() as conn:
        user = insert_user(conn)
        return [(insert_entry(conn, user, **kwargs), user) for _ in range(n)]


def _age(engine: Engine, seconds: int, where: str = "true") -> None:
    """Everything in ``where`` was dispatched (and arrived) ``seconds`` ago."""
    with engine.begin() as conn:
        conn.execute(
            text(
                f"UPDATE visualizations SET dispatched_at = now() - make_interval(secs => :s) "
                f"WHERE {where}"
            ),
            {"s": seconds},
        )
        conn.execute(
            text("UPDATE entry_arrivals SET arrived_at = now() - make_interval(secs => :s)"),
            {"s": seconds},
        )


def _cli_env(db_url: str, redis_url: str, namespace: str) -> dict[str, str]:
    """The environment of a real ``emotionviz`` command on this test's servers."""
    return {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": namespace,
        "PROVIDER": "local",
        "LOG_FORMAT": "json",
    }


def _age_messages(producer: Producer, seconds: int) -> None:
    """The queued messages were sent ``seconds`` ago (as their rows will say)."""
    client = producer.broker.client  # type: ignore[attr-defined]
    keys = queue_keys(producer.broker.namespace, "visualizations")  # type: ignore[attr-defined]
    for redis_id in client.lrange(keys.ready, 0, -1):
        body = json.loads(client.hget(keys.ready_bodies, redis_id))
        body["message_timestamp"] -= seconds * 1000
        client.hset(keys.ready_bodies, redis_id, json.dumps(body))


def test_a_backlog_still_queued_is_never_republished(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    """Published once, days ago by the clock of the rows, and still waiting behind a
    quota: the queue's head proves every message is still there."""
    api = ProducerAPI(uow_factory)
    entries = _entries(engine, 30, created_at="2026-11-20T10:00:00Z")
    for entry_id, user_id in entries:
        api.entry_created(entry_id, user_id)
    _age_messages(producer, 3_600)  # the backlog was sent an hour ago, the rows agree
    _age(engine, 3_590)
    for _ in range(3):
        report = _run(uow_factory, producer)
        assert (report.unfinished, report.stuck, report.adopted) == (0, 0, 0)
    assert len(_queued(producer)) == 30


def test_a_lost_message_is_republished_once_per_grace_window(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    api = ProducerAPI(uow_factory)
    entries = _entries(engine, 5)
    for entry_id, user_id in entries:
        api.entry_created(entry_id, user_id)
    _drop_queue(producer)
    assert _run(uow_factory, producer).unfinished == 0  # inside the grace window
    _age(engine, GRACE_S + 5)
    first = _run(uow_factory, producer)
    assert first.unfinished == 5
    assert sorted(m["entry_id"] for m in _queued(producer)) == sorted(str(e) for e, _ in entries)
    _drop_queue(producer)
    for _ in range(3):  # lost again at once: not before the grace window has passed again
        assert _run(uow_factory, producer).unfinished == 0
    _age(engine, GRACE_S + 5)
    assert _run(uow_factory, producer).unfinished == 5


def test_a_quota_delay_is_waited_out(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    [(entry_id, user_id)] = _entries(engine, 1)
    ProducerAPI(uow_factory).entry_created(entry_id, user_id)
    _drop_queue(producer)  # the retry sits in the delay queue, not the ready one
    with uow_factory() as uow:
        uow.single_statement()
        _, claim = uow.entry_pipeline.claim_entry(entry_id, user_id, None, 60)
    assert isinstance(claim, ClaimedVisualization)
    with uow_factory() as uow:  # a daily quota said: come back in an hour
        assert uow.visualizations.release(claim, "429 quota", retry_in_s=3600)
        uow.commit()
    assert _run(uow_factory, producer, grace_s=0).unfinished == 0
    with engine.begin() as conn:  # the hour has passed and the retry never came
        conn.execute(text("UPDATE visualizations SET dispatched_at = now() - interval '1 s'"))
    assert _run(uow_factory, producer, grace_s=0).unfinished == 1


def test_the_requested_style_survives_a_failed_publish_and_every_republish(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    [(entry_id, user_id)] = _entries(engine, 1)
    with uow_factory() as uow:  # committed; the broker then loses the message
        uow.publish(
            EntryCreated(entry_id=entry_id, user_id=user_id, style=VisualizationStyle.METAPHOR)
        )
        uow.commit()
    _drop_queue(producer)
    _age(engine, GRACE_S + 5)
    assert _run(uow_factory, producer).unfinished == 1
    [body] = _queued(producer)
    assert body["style"] == "metaphor"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT style FROM visualizations")).scalar_one() == "metaphor"


def test_an_entry_that_never_got_a_row_is_adopted_whatever_its_date(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    """Imported with a date days ago, its message never sent: found by its arrival, not
    by its date (the old anti-join over every entry found it only by walking them)."""
    [(old, _)] = _entries(engine, 1, created_at="2026-11-01T08:00:00Z")
    assert _run(uow_factory, producer).adopted == 0  # arrived just now: maybe still queued
    _age(engine, GRACE_S + 5)
    report = _run(uow_factory, producer)
    assert (report.adopted, report.unfinished) == (1, 1)
    assert [m["entry_id"] for m in _queued(producer)] == [str(old)]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM entry_arrivals")).scalar_one() == 0
    assert _run(uow_factory, producer).unfinished == 0  # and not again at once


def test_a_claimed_entry_leaves_no_arrival_behind(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    [(entry_id, user_id)] = _entries(engine, 1)
    with uow_factory() as uow:
        uow.single_statement()
        uow.entry_pipeline.claim_entry(entry_id, user_id, None, 60)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM entry_arrivals")).scalar_one() == 0


def test_a_stuck_row_is_republished_once_when_its_lease_runs_out(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    [(entry_id, user_id)] = _entries(engine, 1)
    ProducerAPI(uow_factory).entry_created(entry_id, user_id)
    _drop_queue(producer)
    with uow_factory() as uow:
        uow.single_statement()
        uow.entry_pipeline.claim_entry(entry_id, user_id, None, 60)
    assert _run(uow_factory, producer).stuck == 0  # the lease is live
    with engine.begin() as conn:  # sent two minutes ago, its worker died since
        conn.execute(
            text(
                "UPDATE visualizations SET dispatched_at = now() - interval '120 s', "
                "lease_expires_at = now() - interval '1 s'"
            )
        )
    assert _run(uow_factory, producer).stuck == 1
    for _ in range(3):
        assert _run(uow_factory, producer).stuck == 0
    assert len(_queued(producer)) == 1


def test_one_reconcile_at_a_time(
    db_url: str, engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    entries = _entries(engine, 2)
    for entry_id, user_id in entries:
        ProducerAPI(uow_factory).entry_created(entry_id, user_id)
    _drop_queue(producer)
    _age(engine, GRACE_S + 5)
    with psycopg.connect(db_url.replace("postgresql+psycopg", "postgresql")) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (RECONCILE_LOCK_KEY,))
        assert _run(uow_factory, producer).skipped
        assert _queued(producer) == []
    assert _run(uow_factory, producer).unfinished == 2


def test_an_empty_queue_head_is_infinite_and_a_garbled_one_is_careful(
    producer: Producer,
) -> None:
    broker = producer.broker
    client, namespace = broker.client, broker.namespace  # type: ignore[attr-defined]
    assert queue_head_sent_at(client, namespace, "visualizations") == math.inf
    keys = queue_keys(namespace, "visualizations")
    client.rpush(keys.ready, "x")
    client.hset(keys.ready_bodies, "x", "not json")
    assert queue_head_sent_at(client, namespace, "visualizations") == 0.0


@pytest.mark.parametrize(
    ("name", "sql", "params", "index"),
    [
        ("pending", DUE_PENDING, {"sent_before": "now", "limit": 5000}, "pending_dispatch"),
        (
            "stuck",
            DUE_STUCK,
            {"grace": 300, "limit": 5000, "sent_before": "2100-01-01T00:00:00Z"},
            "visualizations_status",
        ),
        ("adopt", ADOPT_ARRIVALS, {"grace": 300, "limit": 5000}, "entry_arrivals"),
    ],
)
def test_the_reconcilers_reads_use_their_indexes(
    engine: Engine, name: str, sql: str, params: dict[str, Any], index: str
) -> None:
    """With 20,000 finished rows and the planner's statistics taken, every read goes
    through its partial index, never a sequential scan of visualizations."""
    with engine.begin() as conn:
        user = insert_user(conn)
        conn.execute(
            text(
                "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
                "SELECT :u, 'bulk', ARRAY['joy'], 0.5 FROM generate_series(1, 20000)"
            ),
            {"u": user},
        )
        conn.execute(
            text(
                "INSERT INTO visualizations (entry_id, user_id, status) "
                "SELECT id, user_id, 'completed' FROM emotion_entries"
            )
        )
        conn.execute(text("DELETE FROM entry_arrivals"))
        conn.execute(text("ANALYZE"))
    bound = {k: v for k, v in params.items()}
    if bound.get("sent_before") == "now":
        bound["sent_before"] = "2100-01-01T00:00:00Z"
    with engine.begin() as conn:
        plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}"), bound).scalar_one()
        conn.rollback()
    nodes = _nodes(plan[0]["Plan"])
    assert not any(
        n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "visualizations" for n in nodes
    ), f"{name}: {nodes}"
    assert any(index in str(n.get("Index Name", "")) for n in nodes), f"{name}: {nodes}"


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def test_the_first_reconcile_of_a_deployment_leaves_a_fresh_backlog_alone(
    db_url: str,
    redis_server_url: str,
    redis_namespace: str,
    engine: Engine,
    producer: Producer,
    uow_factory: Callable[[], UnitOfWork],
) -> None:
    """The broker's marker is missing on a deployment's very first reconcile too: a
    queue that holds the producers' messages has lost nothing (this first pass used to
    republish the whole backlog). Through the real command, as the scheduler's actor."""
    for entry_id, user_id in _entries(engine, 12):
        ProducerAPI(uow_factory).entry_created(entry_id, user_id)
    _age_messages(producer, GRACE_S + 10)  # past the grace, but every message is queued
    _age(engine, GRACE_S + 5)
    env = _cli_env(db_url, redis_server_url, redis_namespace)
    command = [sys.executable, "-m", "workers.entrypoints.cli", "reconcile", "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["republished_unfinished"] == 0
    assert len(_queued(producer)) == 12
    _drop_queue(producer)  # now the broker loses them: the next pass sees it at once
    producer.broker.client.delete(f"{redis_namespace}:reconciler:alive-since")  # type: ignore[attr-defined]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(done.stdout)["republished_unfinished"] == 12


def test_the_maintenance_pass_refreshes_analytics_of_a_deleted_entry(
    db_url: str, redis_server_url: str, redis_namespace: str, engine: Engine
) -> None:
    """Upstream deletes an entry with plain SQL: the next maintenance pass (the command
    the scheduler's actor runs) brings the person's analytics back to a full recompute."""
    with engine.begin() as conn:
        user = insert_user(conn)
        kept = insert_entry(conn, user, emotions=["joy"], created_at="2026-11-30T10:00:00Z")
        gone = insert_entry(conn, user, emotions=["fear"], created_at="2026-11-30T11:00:00Z")
    env = _cli_env(db_url, redis_server_url, redis_namespace)
    command = [sys.executable, "-m", "workers.entrypoints.cli"]
    recompute = [*command, "analytics", "recompute", "--period", "day", "--inline", "--quiet"]
    recompute += ["--from", "2026-11-30", "--to", "2026-11-30"]
    done = subprocess.run(recompute, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM emotion_entries WHERE id = :e"), {"e": gone})
    reconcile_json = [*command, "reconcile", "--json"]
    done = subprocess.run(reconcile_json, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["analytics_refreshed"] >= 1
    with engine.connect() as conn:
        counts = conn.execute(
            text(
                "SELECT emotion_counts FROM emotion_analytics WHERE user_id = :u "
                "AND period_start = '2026-11-30' AND period_end = '2026-11-30'"
            ),
            {"u": user},
        ).scalar_one()
    assert counts == {"joy": 1}, (kept, counts)


def test_a_pass_works_in_short_batches_up_to_its_limit(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    """Each batch is its own short transaction; the pass goes on until the due rows or
    its limit run out, and no row is published twice in a pass."""
    entries = _entries(engine, 8)
    for entry_id, user_id in entries:
        ProducerAPI(uow_factory).entry_created(entry_id, user_id)
    _drop_queue(producer)
    _age(engine, GRACE_S + 5)
    assert _run(uow_factory, producer, batch=3, limit=5).unfinished == 5
    assert _run(uow_factory, producer, batch=3, limit=100).unfinished == 3
    assert sorted(m["entry_id"] for m in _queued(producer)) == sorted(str(e) for e, _ in entries)


def test_after_a_broker_loss_each_row_is_republished_once_per_pass(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    """The broker lost everything: no grace, no delay, but one message per row, however
    many batches the pass takes (its own republishes are dispatched after it began)."""
    entries = _entries(engine, 8)
    for entry_id, user_id in entries:
        ProducerAPI(uow_factory).entry_created(entry_id, user_id)
    _drop_queue(producer)
    report = _run(uow_factory, producer, batch=3, limit=100, broker_lost_data=lambda: True)
    assert report.unfinished == 8
    assert sorted(m["entry_id"] for m in _queued(producer)) == sorted(str(e) for e, _ in entries)


def test_an_intake_turn_is_resent_once_per_grace_window(
    engine: Engine, producer: Producer, uow_factory: Callable[[], UnitOfWork]
) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
        conn.execute(
            text(
                "INSERT INTO intake_sessions (user_id, initial_situation, updated_at) "
                "VALUES (:u, 'lost turn', now() - interval '1 hour')"
            ),
            {"u": user},
        )
    assert _run(uow_factory, producer).intake == 1
    for _ in range(3):
        assert _run(uow_factory, producer).intake == 0
