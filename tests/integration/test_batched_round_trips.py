"""Round trips saved on the per-entry path, on real Redis and a real folder: a rate
gate's release inside ``releases_batched()`` frees its slot without the thread waiting
for the reply, reads that reply with the next gate command, gives its connection back
when the block ends, and only logs a reply that says it failed; the
consumer's acks go out with its next fetch (or at close), so a message acknowledged
and never sent stays held by the worker (delivered again, never lost); the local
store's unnamed-file writes are atomic, replace an existing picture, and fall back to
named temporary files."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from structlog.testing import capture_logs

from domain.messages import MaintenanceReconcile
from workers.messaging.consumer import AdmittingConsumer
from workers.messaging.redis_clients import pooled_client
from workers.messaging.redis_keys import RedisCommands, queue_keys
from workers.providers.ratelimit import RateGate, releases_batched
from workers.providers.storage import LocalImageStore

pytestmark = pytest.mark.integration

QUEUE = MaintenanceReconcile.queue_name


def _gate(client: redis.Redis, key: str) -> RateGate:
    return RateGate(
        client, key, per_minute=1000, max_concurrent=10, max_wait_s=5, slot_ttl_ms=30_000
    )


def _free(client: redis.Redis) -> bool:
    """Whether a connection of the (one-connection) pool is free right now."""
    try:
        conn = client.connection_pool.get_connection()
    except redis.ConnectionError:
        return False
    client.connection_pool.release(conn)
    return True


def test_a_batched_release_frees_the_slot_and_its_connection_comes_back(
    redis_server_url: str, redis_namespace: str
) -> None:
    # One connection in the pool: the owed reply keeps it out until it is read.
    client = pooled_client(redis_server_url, 1, wait_s=0.2)
    observer = redis.Redis.from_url(redis_server_url)
    first, second = (_gate(client, f"{redis_namespace}:ratelimit:{n}") for n in ("a", "b"))
    with releases_batched():
        with first.slot():
            assert observer.zcard(f"{first.key}:holders") == 1
        assert not _free(client)  # the release's reply is still to be read on it
        with second.slot():  # reads it, then asks on the same connection
            assert observer.zcard(f"{first.key}:holders") == 0
            assert observer.zcard(f"{second.key}:holders") == 1
        assert not _free(client)  # sent, its reply not read yet
    assert _free(client)
    assert observer.zcard(f"{second.key}:holders") == 0
    # Outside a block a release is a plain round trip: nothing is owed.
    with first.slot():
        pass
    assert _free(client)
    assert observer.zcard(f"{first.key}:holders") == 0
    observer.close()
    client.close()


def test_a_batched_release_that_failed_only_logs_when_its_reply_is_read(
    redis_server_url: str, redis_namespace: str
) -> None:
    client = pooled_client(redis_server_url, 1, wait_s=0.2)
    observer = redis.Redis.from_url(redis_server_url)
    broken, other = (_gate(client, f"{redis_namespace}:ratelimit:{n}") for n in ("x", "y"))
    with capture_logs() as logs, releases_batched():
        with broken.slot():
            # Its release will meet a key of the wrong type: Redis answers an error.
            observer.delete(f"{broken.key}:holders")
            observer.set(f"{broken.key}:holders", "not a sorted set")
        assert [line for line in logs if line["log_level"] == "warning"] == []
        with other.slot():  # reads the error, then asks for its own slot
            pass
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert [line["event"] for line in warnings] == [
        "could not release a rate-limit slot; it frees itself when its ttl runs out"
    ]
    assert warnings[0]["gate"] == "x" and "WRONGTYPE" in warnings[0]["reason"]
    assert _free(client) and observer.zcard(f"{other.key}:holders") == 0
    observer.close()
    client.close()


@pytest.fixture
def actor(broker: dramatiq.Broker) -> dramatiq.Actor[..., None]:
    @dramatiq.actor(actor_name=MaintenanceReconcile.actor_name, queue_name=QUEUE, broker=broker)
    def reconcile(*args: Any, **kwargs: Any) -> None:
        return None

    return reconcile


def _stored(broker: Any) -> set[bytes]:
    return set(broker.client.hkeys(queue_keys(broker.namespace, QUEUE).ready_bodies))


def _held(broker: Any) -> set[bytes]:
    return set(broker.client.smembers(queue_keys(broker.namespace, QUEUE).acks(broker.broker_id)))


def _next(consumer: AdmittingConsumer) -> Any:
    for _ in range(50):
        message = next(consumer)
        if message is not None:
            return message
    raise AssertionError("no message came")


def test_acks_go_out_with_the_next_fetch_and_at_close(
    broker: Any, actor: dramatiq.Actor[..., None]
) -> None:
    sent = [actor.send({}) for _ in range(3)]
    ids = {m.options["redis_message_id"].encode() for m in sent}
    consumer = broker.consume(QUEUE, prefetch=1, timeout=50)
    assert isinstance(consumer, AdmittingConsumer)
    first = _next(consumer)
    consumer.ack(first)
    done = first.options["redis_message_id"].encode()
    # Handed to the consumer, not sent: still stored and held by this worker.
    assert done in _stored(broker) and done in _held(broker)
    assert consumer.outstanding_message_count == 0  # the slot is free for the fetch
    second = _next(consumer)  # the ack went with this fetch
    assert done not in _stored(broker) and done not in _held(broker)
    consumer.ack(second)
    consumer.close()  # what is left goes out at close
    assert _held(broker) == set()
    assert _stored(broker) == ids - {done, second.options["redis_message_id"].encode()}
    # After close an ack is sent at once.
    third = broker.consume(QUEUE, prefetch=1, timeout=50)
    message = _next(third)
    third.close()
    third.ack(message)
    assert _stored(broker) == set()
    assert _held(broker) == set()


def test_an_ack_never_sent_leaves_the_message_held_for_redelivery(
    broker: Any, actor: dramatiq.Actor[..., None]
) -> None:
    sent = actor.send({})
    consumer = broker.consume(QUEUE, prefetch=1, timeout=50)
    consumer.ack(_next(consumer))
    # The worker dies here (no fetch, no close): the message is still this worker's,
    # which Dramatiq gives back to the queue once the worker's heartbeat stops.
    rid = sent.options["redis_message_id"].encode()
    assert rid in _held(broker) and rid in _stored(broker)


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("unnamed", [True, False])
def test_the_local_store_writes_atomically_and_replaces(tmp_path: Path, unnamed: bool) -> None:
    store = LocalImageStore(tmp_path, "http://media.test/m")
    store._unnamed = unnamed and hasattr(os, "O_TMPFILE")
    key = f"visualizations/{uuid.uuid4()}.png"
    assert store.put(key, b"first", "image/png") == f"http://media.test/m/{key}"
    assert store.get(key) == b"first"
    store.put(key, b"second picture", "image/png")  # a redraw: replaced whole
    assert store.get(key) == b"second picture"
    path = tmp_path / key
    assert path.stat().st_mode & 0o777 == 0o600
    assert _files(path.parent) == {path.name}  # no temporary file left
    assert store._unnamed == (unnamed and hasattr(os, "O_TMPFILE"))


def test_the_fetch_says_which_key_each_body_came_from(
    broker: Any, actor: dramatiq.Actor[..., None]
) -> None:
    sent = [actor.send({}) for _ in range(3)]
    commands = RedisCommands(broker, QUEUE)
    fetched = commands.ack_and_fetch([], 2)
    assert fetched.keys == [m.options["redis_message_id"].encode() for m in sent[:2]]
    assert [json.loads(b or b"{}")["message_id"] for b in fetched.bodies] == [
        m.message_id for m in sent[:2]
    ]
    # A body that claims another stored message's key is refused, from those keys.
    consumer = broker.consume(QUEUE, prefetch=4, timeout=50)
    keys = queue_keys(broker.namespace, QUEUE)
    forged = json.loads(broker.client.hget(keys.ready_bodies, sent[2].options["redis_message_id"]))
    forged["options"]["redis_message_id"] = sent[0].options["redis_message_id"]
    broker.client.hset(keys.ready_bodies, sent[2].options["redis_message_id"], json.dumps(forged))
    with capture_logs() as logs:
        assert next(consumer) is None  # refused, dead-lettered
    assert any("does not name the key" in str(line.get("reason", "")) for line in logs), logs
    consumer.close()
