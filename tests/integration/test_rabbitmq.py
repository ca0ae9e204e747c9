"""RabbitMQ as the broker, outside the worker: ``status`` and ``dlq`` read it or say
what they need in one line; the producer gives up on an unreachable RabbitMQ with
BrokerUnavailableError after its retries, and a commit whose publish fails keeps the
change for the reconciler. Real RabbitMQ (a vhost of this test's own), PostgreSQL and
Redis; the CLI as real processes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from sqlalchemy import Engine

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.errors import BrokerUnavailableError
from domain.messages import EntryCreated
from tests.conftest import RUN_ID, DatabaseFactory
from tests.integration.helpers import count, insert_entry, insert_user
from tests.rabbitmq_support import publish_raw, rabbitmq_vhost, ready_count
from workers import bootstrap
from workers.messaging import producer as producer_module
from workers.messaging.producer import Producer
from workers.messaging.rabbitmq import SafeRabbitmqBroker

pytestmark = pytest.mark.integration
UNREACHABLE = "amqp://guest:guest@127.0.0.1:1/%2F?connection_attempts=1&socket_timeout=1"


@pytest.fixture(scope="module")
def amqp_url() -> Iterator[str]:
    with rabbitmq_vhost("cli") as url:
        yield url


@pytest.fixture(scope="module")
def cli_env(
    database_factory: DatabaseFactory, redis_server_url: str, amqp_url: str
) -> Iterator[dict[str, str]]:
    name, url = database_factory.create()
    yield {
        "DATABASE_URL": url,
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": f"evt:{RUN_ID}:rmq-{uuid.uuid4().hex[:6]}",
        "BROKER_URL": amqp_url,
        "PROVIDER": "local",
        "PYTHONPATH": str(Path.cwd()),
        "LOG_FORMAT": "json",
    }
    database_factory.drop(name)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _message() -> EntryCreated:
    return EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4())


def test_status_and_dlq_on_rabbitmq(cli_env: dict[str, str], amqp_url: str) -> None:
    broker = SafeRabbitmqBroker(url=amqp_url)
    try:
        for _ in range(3):
            Producer(broker).publish(_message())
        Producer(broker).publish(_message(), delay_ms=600_000)
    finally:
        broker.close()
    publish_raw(amqp_url, "visualizations.XQ", b'{"dead": 1}')
    publish_raw(amqp_url, "visualizations.XQ", b'{"dead": 2}')

    done = _run(["status", "--json"], cli_env)
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    assert status["broker"] == "rabbitmq" and status["workers_alive"] is None
    assert status["queues"]["visualizations"] == {
        "ready": 3,
        "delayed": 1,
        "dead": 2,
        "consumers": 0,
        "in_flight": None,
        "retrying": None,
        "oldest_age_s": None,
    }
    assert status["queues"]["intake"]["ready"] == 0  # never declared: nothing there
    table = _run(["status"], cli_env)
    assert table.returncode == 0 and "n/a on RabbitMQ" in table.stdout, table.stderr

    for args in (["dlq", "list"], ["dlq", "show", "x"], ["dlq", "retry", "--all"]):
        refused = _run(args, cli_env)
        assert refused.returncode == 2, (args, refused.stderr)
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "management UI" in lines[0], refused.stderr
    purged = _run(["dlq", "purge", "--yes", "--json"], cli_env)
    assert purged.returncode == 0, purged.stderr
    assert json.loads(purged.stdout) == {"purged": 2}
    assert ready_count(amqp_url, "visualizations.XQ") == 0
    assert ready_count(amqp_url, "visualizations") == 3  # purge touched the dead only


@pytest.mark.parametrize("args", [["status"], ["dlq", "purge", "--yes"]])
def test_unreachable_rabbitmq_is_one_line_exit_1(cli_env: dict[str, str], args: list[str]) -> None:
    done = _run(args, {**cli_env, "BROKER_URL": UNREACHABLE})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and "RabbitMQ did not answer" in lines[0], done.stderr
    assert "guest:guest" not in done.stderr  # the URL's password is scrubbed or absent


def test_publish_to_unreachable_rabbitmq_fails_after_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(producer_module, "PUBLISH_MAX_SECONDS", 30.0)
    broker = SafeRabbitmqBroker(url=UNREACHABLE)
    attempts: list[float] = []
    enqueue = broker.enqueue
    monkeypatch.setattr(
        broker, "enqueue", lambda *a, **k: attempts.append(time.monotonic()) or enqueue(*a, **k)
    )
    with pytest.raises(BrokerUnavailableError, match="after 4 attempts"):
        Producer(broker).publish(_message())
    assert len(attempts) == producer_module.PUBLISH_ATTEMPTS


def test_commit_whose_publish_fails_keeps_the_change(engine: Engine) -> None:
    broker = SafeRabbitmqBroker(url=UNREACHABLE)
    uow = UnitOfWork(make_session_factory(engine), Producer(broker))
    with engine.begin() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)
    with uow:  # the publish leaves the row (its dispatch) in the unit's transaction
        uow.publish(EntryCreated(entry_id=entry_id, user_id=user_id))
        uow.commit()
    assert uow.publish_error is not None and "broker did not take" in uow.publish_error
    assert [m.entry_id for m in uow.unpublished] == [entry_id]  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert count(conn, "visualizations", "entry_id = :e", e=entry_id) == 1


def test_the_reconciler_resends_nothing_pending_while_a_rabbitmq_queue_holds_messages() -> None:
    """RabbitMQ cannot show when its oldest message was sent: while any waits, no
    pending row is resent (it may be one of them); once drained, the grace decides."""
    queue = "visualizations"
    with rabbitmq_vhost("reconcile") as url:
        with pika.BlockingConnection(pika.URLParameters(url)) as connection:
            connection.channel().queue_declare(queue, durable=True)
        assert bootstrap.rabbitmq_queued_since(url, queue) == math.inf
        publish_raw(url, queue, b"{}")
        assert bootstrap.rabbitmq_queued_since(url, queue) == 0.0
        with pika.BlockingConnection(pika.URLParameters(url)) as connection:
            connection.channel().queue_purge(queue)
        assert bootstrap.rabbitmq_queued_since(url, queue) == math.inf
