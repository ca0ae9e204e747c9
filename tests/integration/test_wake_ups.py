"""Wake-ups on real Redis: an idle consumer whose backoff is minutes long is woken by
every way a message is enqueued; without wake-ups it sleeps on (the control); a
delay-queue consumer stops waiting when its message falls due; the subscriber comes
back after its connection is killed; a Redis that refuses PUBLISH still takes messages.

The consumers here are given a backoff of 5 to 10 minutes, so a test that waits a few
seconds cannot pass by the fallback poll: only a wake-up ends the wait.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
import pytest
import redis

from domain.messages import MaintenanceReconcile
from tests.conftest import RUN_ID
from workers.messaging.broker import SafeRedisBroker
from workers.messaging.consumer import AdmittingConsumer
from workers.messaging.producer import Producer
from workers.messaging.wake_ups import WakeUps, client_name

pytestmark = [pytest.mark.integration]

QUEUE = MaintenanceReconcile.queue_name
LONG_MS = 600_000  # the ceiling of the consumers' backoff here: ten minutes
SOON_S = 10.0  # what "at once" must beat, generously (the backoff is >= 5 minutes)


@pytest.fixture
def actor(broker: dramatiq.Broker) -> dramatiq.Actor[..., None]:
    @dramatiq.actor(actor_name=MaintenanceReconcile.actor_name, queue_name=QUEUE, broker=broker)
    def reconcile(*args: Any, **kwargs: Any) -> None:
        return None

    return reconcile


def idle_consumer(broker: dramatiq.Broker, queue: str = QUEUE) -> AdmittingConsumer:
    """A consumer as a worker's consumer thread holds it after a long quiet spell."""
    consumer = broker.consume(queue, prefetch=4, timeout=LONG_MS)
    assert isinstance(consumer, AdmittingConsumer)
    consumer.misses = 30  # its next backoff is the ceiling: 5 to 10 minutes
    return consumer


class Taker:
    """Calls next(consumer), in a thread as Dramatiq's consumer thread does, until a
    message comes."""

    def __init__(self, consumer: AdmittingConsumer) -> None:
        self.consumer = consumer
        self.message: Any = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for _ in range(5):  # a wake-up that another consumer won returns None first
            message = next(self.consumer)
            if message is not None:
                self.message = message
                return

    def wait(self, seconds: float) -> Any:
        self.thread.join(seconds)
        return self.message


def settle() -> None:
    time.sleep(0.3)  # the taker is (most likely) waiting by now; the test holds either way


def wait_until(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return check()


def _enqueue(broker: dramatiq.Broker, actor: dramatiq.Actor[..., None]) -> str:
    # Dramatiq's own path: Actor.send, its delayed-message mover and Retries all call
    # broker.enqueue.
    return str(actor.send({}).message_id)


def _publish_many(broker: dramatiq.Broker, actor: dramatiq.Actor[..., None]) -> str:
    # The outbox's path (UnitOfWork.commit -> Producer.publish_many): a pipelined batch.
    return Producer(broker).publish_many([MaintenanceReconcile()])[0]


def _publish(broker: dramatiq.Broker, actor: dramatiq.Actor[..., None]) -> str:
    return Producer(broker).publish(MaintenanceReconcile())


@pytest.mark.parametrize("send", [_enqueue, _publish_many, _publish])
def test_an_idle_consumer_is_woken_by_an_enqueue(
    broker: dramatiq.Broker,
    actor: dramatiq.Actor[..., None],
    send: Callable[[dramatiq.Broker, dramatiq.Actor[..., None]], str],
) -> None:
    taker = Taker(idle_consumer(broker))
    settle()
    message_id = send(broker, actor)
    message = taker.wait(SOON_S)
    assert message is not None, "the consumer slept through the wake-up"
    assert message.message_id == message_id


def test_without_wake_ups_the_consumer_sleeps_its_backoff(
    redis_server_url: str, redis_namespace: str
) -> None:
    """The control: the same wait, wake-ups off (Dramatiq's behaviour), does not end."""
    broker = SafeRedisBroker(url=redis_server_url, namespace=redis_namespace, wake_ups=False)

    @dramatiq.actor(actor_name="control", queue_name="control", broker=broker)
    def control() -> None:
        return None

    consumer = idle_consumer(broker, "control")
    taker = Taker(consumer)
    settle()
    control.send()
    assert taker.wait(1.5) is None and taker.thread.is_alive()
    consumer.woken.set()  # end the test's wait (what a wake-up would do)
    assert taker.wait(SOON_S) is not None
    broker.close()


def test_requeued_messages_wake_another_consumer(
    broker: dramatiq.Broker, actor: dramatiq.Actor[..., None]
) -> None:
    """A worker that stops gives back what it had prefetched, announced."""
    stopping = broker.consume(QUEUE, prefetch=4, timeout=LONG_MS)
    actor.send({})
    held = next(stopping)
    assert held is not None
    taker = Taker(idle_consumer(broker))
    settle()
    stopping.requeue([held])
    message = taker.wait(SOON_S)
    assert message is not None and message.message_id == held.message_id


def test_a_delay_queue_consumer_stops_waiting_when_its_message_is_due(
    broker: dramatiq.Broker, actor: dramatiq.Actor[..., None]
) -> None:
    consumer = idle_consumer(broker, f"{QUEUE}.DQ")
    taker = Taker(consumer)
    settle()
    actor.send_with_options(args=({},), delay=500)  # a retry's backoff, say
    held = taker.wait(SOON_S)
    assert held is not None and "eta" in held.options
    # Nothing more to fetch: the next wait is the backoff (minutes again), cut to the eta.
    consumer.misses = 30
    started = time.monotonic()
    assert next(consumer) is None
    waited = time.monotonic() - started
    assert waited < SOON_S
    assert time.time() * 1000 >= held.options["eta"] - 50  # it waited until it was due


def test_only_a_push_onto_an_empty_queue_is_announced(
    broker: dramatiq.Broker, actor: dramatiq.Actor[..., None]
) -> None:
    """Nobody can be waiting on a queue that holds messages: under load, no PUBLISH."""
    assert isinstance(broker, SafeRedisBroker)
    listener = broker.client.pubsub()  # type: ignore[no-untyped-call]
    listener.subscribe(broker.wake_channel)
    assert listener.get_message(timeout=SOON_S)["type"] == "subscribe"

    actor.send({})  # onto the empty queue: announced
    Producer(broker).publish_many([MaintenanceReconcile(), MaintenanceReconcile()])
    actor.send({})  # three messages wait: not announced
    consumer = broker.consume(QUEUE, prefetch=10, timeout=LONG_MS)
    assert len([m for m in (next(consumer) for _ in range(4)) if m is not None]) == 4
    actor.send_with_options(args=({},), delay=60_000)  # the delay queue was empty

    heard = []
    while (message := listener.get_message(timeout=0.5)) is not None:
        heard.append(message["data"])
    assert heard == [QUEUE.encode(), f"{QUEUE}.DQ".encode()]
    listener.close()


def _client_id(client: redis.Redis, name: str) -> int | None:
    for entry in client.client_list():
        if entry.get("name") == name:
            return int(entry["id"])
    return None


def test_the_subscriber_subscribes_again_after_its_connection_is_killed(
    redis_server_url: str, redis_namespace: str
) -> None:
    client = redis.Redis.from_url(redis_server_url)
    wake_ups = WakeUps(client.connection_pool, redis_namespace)
    woken = wake_ups.register("q")
    try:
        assert wait_until(lambda: wake_ups.subscriptions >= 1, SOON_S)
        first = _client_id(client, client_name(redis_namespace))
        assert first is not None

        client.client_kill_filter(_id=first)

        assert wait_until(lambda: wake_ups.subscriptions >= 2, SOON_S), "not subscribed again"
        second = _client_id(client, client_name(redis_namespace))
        assert second is not None and second != first
        assert wake_ups.running
        woken.clear()
        client.publish(wake_ups.channel, "q")
        assert woken.wait(SOON_S), "no wake-up after the reconnection"
    finally:
        wake_ups.close()
        client.close()
    assert not wake_ups.running


def test_a_subscriber_started_while_redis_is_unreachable_waits_for_it() -> None:
    """Nothing listens on the port: the thread lives on (reconnecting), never raises."""
    pool = redis.ConnectionPool.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    wake_ups = WakeUps(pool, f"evt:{RUN_ID}:unreachable")
    wake_ups.register("q")
    try:
        time.sleep(1.0)
        assert wake_ups.running and wake_ups.subscriptions == 0
    finally:
        wake_ups.close()


def test_a_redis_that_refuses_publish_still_takes_the_message(
    redis_server_url: str, redis_namespace: str
) -> None:
    admin = redis.Redis.from_url(redis_server_url)
    user = f"evt-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    admin.acl_setuser(
        user, enabled=True, nopass=True, keys=["*"], channels=["*"],
        commands=["+@all", "-publish"],
    )  # fmt: skip
    try:
        pool = admin.connection_pool
        as_user = redis.ConnectionPool(
            connection_class=pool.connection_class,
            **{**pool.connection_kwargs, "username": user, "password": "x"},
        )
        client = redis.Redis(connection_pool=as_user)
        broker = SafeRedisBroker(client=client, namespace=redis_namespace)

        @dramatiq.actor(actor_name="refused", queue_name="refused", broker=broker)
        def refused() -> None:
            return None

        refused.send()
        Producer(broker).publish_many([MaintenanceReconcile()])
        assert broker.wake_ups_enabled is False
        assert admin.llen(f"{redis_namespace}:refused") == 1
        assert admin.llen(f"{redis_namespace}:{QUEUE}") == 1
        broker.close()
        client.close()
    finally:
        admin.acl_deluser(user)
        admin.close()
