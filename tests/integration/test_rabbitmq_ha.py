"""RabbitMQ you can lose a node of, on this machine's RabbitMQ (one node runs quorum
queues as a cluster would, with one member): quorum queues with their delay and
dead-letter queues (RABBITMQ_QUEUE_TYPE=quorum), a queue of the other type refused
with one line (and a worker stopped at boot, exit 2), publisher confirms (a publish
RabbitMQ refuses raises, after the producer's retries, and a refusal that ends is
retried through), and a BROKER_URL naming several servers. A vhost of each test's own
(tests/rabbitmq_support.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import pika
import pytest
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from domain.errors import BrokerUnavailableError, ConfigurationError
from domain.messages import EntryCreated
from tests.rabbitmq_support import (
    fill_until_refused,
    limit_length,
    queue_types,
    rabbitmq_vhost,
    ready_count,
    vhost_of,
)
from workers.messaging import producer as producer_module
from workers.messaging.producer import Producer, envelope
from workers.messaging.rabbitmq import SafeRabbitmqBroker
from workers.messaging.rabbitmq_state import read_rabbitmq_state
from workers.observability.readiness import check_rabbitmq
from workers.settings import Settings, load_settings

pytestmark = pytest.mark.integration
QUEUE = "visualizations"
NAMES = (QUEUE, f"{QUEUE}.DQ", f"{QUEUE}.XQ")
REFUSED = "amqp://guest:guest@127.0.0.1:1/{vhost}?connection_attempts=1&socket_timeout=1"


def _message() -> EntryCreated:
    return EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4())


def _declare_actor(broker: SafeRabbitmqBroker) -> None:
    """The actor our messages name, so that the consumer admits them."""

    def handle(payload: object) -> None:
        pass

    dramatiq.actor(actor_name="entry.created", queue_name=QUEUE, broker=broker)(handle)


def _next_delivery(consumer: Consumer) -> MessageProxy:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        delivery = next(consumer)
        if delivery is not None:
            return delivery
    raise AssertionError("no delivery within 10 s")


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_queues_are_declared_with_the_type_asked_for(queue_type: str) -> None:
    with rabbitmq_vhost("qtype") as url:
        broker = SafeRabbitmqBroker(url=url, queue_type=queue_type)  # type: ignore[arg-type]
        try:
            Producer(broker).publish(_message())
            Producer(broker).publish(_message(), delay_ms=600_000)
            _declare_actor(broker)
            consumer = broker.consume(QUEUE, timeout=500)  # a delivery, dead-lettered
            consumer.nack(_next_delivery(consumer))
            consumer.close()
        finally:
            broker.close()
        types = queue_types(url)
        assert {name: types.get(name) for name in NAMES} == dict.fromkeys(NAMES, queue_type)
        assert [ready_count(url, name) for name in NAMES] == [0, 1, 1]


def test_a_queue_of_the_other_type_is_refused_with_one_line() -> None:
    with rabbitmq_vhost("conflict") as url:
        classic = SafeRabbitmqBroker(url=url)
        quorum = SafeRabbitmqBroker(url=url, queue_type="quorum")
        try:
            Producer(classic).publish(_message())
            with pytest.raises(ConfigurationError) as refused:
                Producer(quorum).publish(_message())
            message = str(refused.value)
            assert message == (
                "RabbitMQ queue 'visualizations' exists as a classic queue but "
                "RABBITMQ_QUEUE_TYPE=quorum: a queue's type cannot change in place; move to "
                "a new vhost, or drain and delete the queues (docs/operations.md, "
                "'Running on RabbitMQ')"
            )
            assert ready_count(url, QUEUE) == 1  # nothing of the quorum broker's landed
        finally:
            classic.close()
            quorum.close()
    with rabbitmq_vhost("conflict") as url:  # and the other way round
        quorum = SafeRabbitmqBroker(url=url, queue_type="quorum")
        classic = SafeRabbitmqBroker(url=url)
        try:
            Producer(quorum).publish(_message())
            with pytest.raises(ConfigurationError, match=r"exists as a quorum .*=classic"):
                Producer(classic).publish(_message())
        finally:
            classic.close()
            quorum.close()


def test_a_worker_meeting_a_classic_queue_with_quorum_asked_exits_2_with_one_line(
    db_url: str, redis_server_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    with rabbitmq_vhost("worker") as url:
        earlier = SafeRabbitmqBroker(url=url)  # classic, as the version before declared
        try:
            earlier.declare_queue("intake", ensure=True)
        finally:
            earlier.close()
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_server_url,
            "REDIS_NAMESPACE": redis_namespace,
            "BROKER_URL": url,
            "RABBITMQ_QUEUE_TYPE": "quorum",
            "PROVIDER": "local",
            "MEDIA_DIR": str(tmp_path / "media"),
            "METRICS_PORT": "0",
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(Path.cwd()),
        }
        args = ["-m", "dramatiq", "workers.entrypoints.worker", "--processes", "1"]
        proc = subprocess.Popen(
            [sys.executable, *args, "--threads", "1", "--skip-logging"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            _, stderr = proc.communicate()
            pytest.fail(f"the worker started on a classic queue: {stderr[-600:]}")
    assert proc.returncode == 2, stderr
    ours = [line for line in stderr.splitlines() if line.startswith("emotionviz worker:")]
    assert len(ours) == 1 and "'intake' exists as a classic queue" in ours[0], stderr
    assert "Traceback" not in stderr and "guest:guest" not in stderr


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_publish_rabbitmq_refuses_raises_after_the_retries(
    queue_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(producer_module, "PUBLISH_MAX_SECONDS", 30.0)
    with rabbitmq_vhost("nack") as url:
        broker = SafeRabbitmqBroker(url=url, queue_type=queue_type)  # type: ignore[arg-type]
        try:
            broker.declare_queue(QUEUE, ensure=True)
            limit_length(url, QUEUE, 1)
            held = fill_until_refused(url, QUEUE)
            attempts: list[int] = []
            enqueue = broker.enqueue

            def counted(*args: Any, **kwargs: Any) -> Any:
                attempts.append(1)
                return enqueue(*args, **kwargs)

            monkeypatch.setattr(broker, "enqueue", counted)
            with pytest.raises(BrokerUnavailableError, match=r"after 4 attempts.*NACKed"):
                Producer(broker).publish(_message())
            assert len(attempts) == producer_module.PUBLISH_ATTEMPTS
            assert ready_count(url, QUEUE) == held
            # Without confirms (Dramatiq's default), the same refusal went unseen.
            unconfirmed = RabbitmqBroker(url=url)
            try:
                unconfirmed.channel.basic_publish("", QUEUE, envelope(_message()).encode())
                unconfirmed.channel.queue_declare(QUEUE, passive=True)  # a round trip
            finally:
                unconfirmed.close()
            assert ready_count(url, QUEUE) == held
        finally:
            broker.close()


def test_a_refusal_that_ends_is_retried_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "PUBLISH_MAX_SECONDS", 30.0)
    with rabbitmq_vhost("nack") as url:
        broker = SafeRabbitmqBroker(url=url, queue_type="quorum")
        try:
            broker.declare_queue(QUEUE, ensure=True)
            limit_length(url, QUEUE, 1)
            fill_until_refused(url, QUEUE)

            def drain() -> None:  # a consumer catching up, a moment later
                with pika.BlockingConnection(pika.URLParameters(url)) as connection:
                    connection.channel().queue_purge(QUEUE)

            timer = threading.Timer(0.3, drain)
            started = time.monotonic()
            timer.start()
            message_id = Producer(broker).publish(_message())
            assert time.monotonic() - started >= 0.3  # refused until the drain, then taken
            timer.join()
            with pika.BlockingConnection(pika.URLParameters(url)) as connection:
                method, _, body = connection.channel().basic_get(QUEUE, auto_ack=True)
            assert method is not None and message_id.encode() in body
        finally:
            broker.close()


def test_a_broker_url_naming_several_servers_connects_through_one_that_answers() -> None:
    with rabbitmq_vhost("nodes") as good:
        vhost = pika.URLParameters(good).virtual_host
        url = f"{REFUSED.format(vhost=vhost)};{good}"  # the first node is down
        assert Settings(_env_file=None, broker_url=url).broker_url is not None  # type: ignore[call-arg]
        broker = SafeRabbitmqBroker(url=url, queue_type="quorum")
        try:
            message_id = Producer(broker).publish(_message())
            assert read_rabbitmq_state(url).queues[QUEUE].ready == 1
            _declare_actor(broker)
            consumer = broker.consume(QUEUE, timeout=500)
            delivery = _next_delivery(consumer)
            assert delivery.message_id == message_id
            consumer.ack(delivery)
            consumer.close()
        finally:
            broker.close()
        assert check_rabbitmq(url, 2.0).ok
        assert vhost_of(good) == vhost


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("amqp://u:secret@h1:5672,h2:5672/v", "whole URLs separated by ';'"),
        ("amqp://u:secret@h1/v;amqp://u:secret@h2/w", "the same vhost"),
        ("amqp://u:secret@h1/v;redis://h2", "is amqp://"),
        ("amqp://u:secret@h1/v;amqp:///v", "names no host"),
    ],
)
def test_a_multi_node_broker_url_is_checked_in_settings(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(_env_file=None, broker_url=url)
    line = str(refused.value)
    assert "BROKER_URL" in line and reason in line and "secret" not in line, line
