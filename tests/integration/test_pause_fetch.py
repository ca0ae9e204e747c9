"""The fetch script's look at the paused queues' mirror (redis_keys._FETCH_UNLESS_PAUSED,
workers/messaging/pauses.py) against a real Redis: a paused queue gives nothing and
keeps its messages, its delay queue is paused with it, a missing mirror gives nothing
to a strict consumer until it is rebuilt, and a Redis that lost the script loads it."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest

from domain.messages import MaintenanceReconcile
from workers.messaging.pauses import PauseMirror
from workers.messaging.redis_keys import RedisCommands, heartbeats, queue_keys

pytestmark = pytest.mark.integration
QUEUE = "maintenance"


@pytest.fixture
def actor(broker: dramatiq.Broker) -> dramatiq.Actor[..., None]:
    @dramatiq.actor(actor_name=MaintenanceReconcile.actor_name, queue_name=QUEUE, broker=broker)
    def reconcile(*args: Any, **kwargs: Any) -> None:
        return None

    return reconcile


def test_a_paused_queue_and_its_delay_queue_give_nothing_and_keep_their_messages(
    broker: Any, actor: dramatiq.Actor[..., None]
) -> None:
    sent = [actor.send() for _ in range(3)]
    mirror = PauseMirror(broker.client, broker.namespace)
    mirror.write({QUEUE: "2026-12-02T10:00:00+00:00"})
    commands = RedisCommands(broker, QUEUE, strict_pauses=True)
    fetched = commands.ack_and_fetch([], 8)
    assert (fetched.bodies, fetched.state) == ([], "paused")
    assert broker.client.llen(queue_keys(broker.namespace, QUEUE).ready) == 3
    # Heart-beating goes on while paused (a paused worker is not a dead one).
    assert broker.client.zscore(heartbeats(broker.namespace), broker.broker_id) is not None
    delayed = RedisCommands(broker, QUEUE + ".DQ", strict_pauses=True)
    assert delayed.ack_and_fetch([], 8).state == "paused"
    assert mirror.read() == {QUEUE: "2026-12-02T10:00:00+00:00"}

    mirror.write({})
    fetched = commands.ack_and_fetch([], 8)
    assert fetched.state == "ok"
    assert fetched.keys == [m.options["redis_message_id"].encode() for m in sent]


def test_a_missing_mirror_stops_a_strict_fetch_and_the_consumer_rebuilds_it(
    broker: Any, actor: dramatiq.Actor[..., None]
) -> None:
    actor.send()
    mirror = PauseMirror(broker.client, broker.namespace)
    mirror.forget()
    assert mirror.read() is None
    assert RedisCommands(broker, QUEUE, strict_pauses=True).ack_and_fetch([], 8).state == (
        "unmirrored"
    )
    # A broker without a source of truth (a tool, a test) fetches as before.
    assert len(RedisCommands(broker, QUEUE).ack_and_fetch([], 8).bodies) == 1
    actor.send()
    rebuilt: list[bool] = []

    def restore() -> None:  # what the worker module sets: operations.pauses.restore_mirror
        rebuilt.append(True)
        mirror.write({})

    broker.pause_source = restore
    consumer = broker.consume(QUEUE, prefetch=4, timeout=50)  # the worker's start rebuilds
    assert rebuilt == [True]
    mirror.forget()  # lost again while running: the next fetch rebuilds it
    assert next(consumer) is None
    assert rebuilt == [True, True] and mirror.read() == {}
    assert next(consumer) is not None
    consumer.close()


def test_a_redis_that_lost_the_script_loads_it(
    broker: Any, actor: dramatiq.Actor[..., None]
) -> None:
    actor.send()
    PauseMirror(broker.client, broker.namespace).write({})
    broker.client.script_flush()
    fetched = RedisCommands(broker, QUEUE, strict_pauses=True).ack_and_fetch([], 8)
    assert fetched.state == "ok" and len(fetched.bodies) == 1
