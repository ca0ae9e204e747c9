"""Contract tests: what workers/messaging/ relies on in Dramatiq beyond its documented
API (its Redis storage: workers/messaging/redis_keys.py; dramatiq_adapter.py;
docs/architecture.md, "Private names of dependencies"). Each fails loudly when an
upgrade changes it; scripts/upgrade_check runs them on the newest released Dramatiq.
"""

from __future__ import annotations

import inspect
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pika
import pytest
import redis
from dramatiq.broker import Broker, Consumer, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.common import dq_name, q_name, xq_name

from tests.rabbitmq_support import rabbitmq_vhost
from workers.messaging.broker import SafeRedisBroker
from workers.messaging.consumer import AdmittingConsumer
from workers.messaging.delivery import Delivery, RabbitmqDelivery
from workers.messaging.dramatiq_adapter import (
    declaration_pending,
    redeclare_on_consume,
)
from workers.messaging.rabbitmq import AdmittingRabbitmqConsumer, SafeRabbitmqBroker
from workers.messaging.rabbitmq_queues import declare_queues
from workers.messaging.redis_keys import (
    BODIES_SUFFIX,
    DEAD_SUFFIX,
    DELAY_SUFFIX,
    RedisCommands,
    heartbeats,
    queue_keys,
)
from workers.messaging.watchdog import Watchdog

pytestmark = [pytest.mark.contract]

QUEUE = "contract"


@pytest.fixture
def plain(redis_server_url: str, redis_namespace: str) -> Iterator[RedisBroker]:
    """Dramatiq's own Redis broker, none of ours."""
    broker = RedisBroker(url=redis_server_url, namespace=redis_namespace)  # type: ignore[no-untyped-call]
    yield broker
    broker.close()


@pytest.fixture
def ours(redis_server_url: str, redis_namespace: str) -> Iterator[SafeRedisBroker]:
    broker = SafeRedisBroker(
        client=redis.Redis.from_url(redis_server_url), namespace=redis_namespace
    )
    yield broker
    broker.close()


def _message(queue: str = QUEUE, actor: str = "contract.actor") -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue,
        actor_name=actor,
        args=({"n": 1},),
        kwargs={},
        options={},
        message_id=str(uuid.uuid4()),
        message_timestamp=int(time.time() * 1000),
    )


# --- the Redis key layout (redis_keys.py) and the storage commands (RedisCommands) -----


def test_dramatiq_stores_messages_where_redis_keys_says(
    plain: RedisBroker, redis_namespace: str
) -> None:
    client = plain.client
    keys = queue_keys(redis_namespace, QUEUE)
    sent = plain.enqueue(_message())
    redis_id = sent.options["redis_message_id"]
    assert client.lrange(keys.ready, 0, -1) == [redis_id.encode()]
    assert client.hget(keys.ready_bodies, redis_id) == sent.encode()

    delayed = plain.enqueue(_message(), delay=60_000)
    assert delayed.queue_name == QUEUE + DELAY_SUFFIX == dq_name(QUEUE)
    delayed_id = delayed.options["redis_message_id"].encode()
    assert client.lrange(keys.delayed, 0, -1) == [delayed_id]
    assert client.hexists(keys.delayed_bodies, delayed_id)


def test_the_storage_commands_move_messages_as_redis_keys_says(
    plain: RedisBroker, redis_namespace: str
) -> None:
    client = plain.client
    keys = queue_keys(redis_namespace, QUEUE)
    ids = [plain.enqueue(_message()).options["redis_message_id"] for _ in range(3)]
    commands = RedisCommands(plain, QUEUE)

    fetched = commands.fetch(3)
    assert fetched == [client.hget(keys.ready_bodies, i) for i in ids]
    acks = keys.acks(plain.broker_id)
    assert client.smembers(acks) == {i.encode() for i in ids}
    assert client.zscore(heartbeats(redis_namespace), plain.broker_id) is not None
    assert client.llen(keys.ready) == 0

    commands.ack(ids[0])
    assert not client.hexists(keys.ready_bodies, ids[0])
    commands.nack(ids[1])
    assert client.zscore(keys.dead, ids[1]) is not None
    assert client.hexists(keys.dead_bodies, ids[1])
    assert not client.hexists(keys.ready_bodies, ids[1])
    commands.requeue([ids[2]])
    assert client.lrange(keys.ready, 0, -1) == [ids[2].encode()]
    assert client.smembers(acks) == set()


def test_the_queue_name_suffixes_are_dramatiqs() -> None:
    assert dq_name(QUEUE) == QUEUE + DELAY_SUFFIX
    assert xq_name(QUEUE) == xq_name(dq_name(QUEUE)) == QUEUE + DEAD_SUFFIX
    assert q_name(dq_name(QUEUE)) == q_name(xq_name(QUEUE)) == QUEUE
    assert queue_keys("ns", QUEUE).ready_bodies == f"ns:{QUEUE}{BODIES_SUFFIX}"


def test_dramatiqs_consumer_reads_what_our_announced_enqueue_wrote(
    plain: RedisBroker, ours: SafeRedisBroker, redis_namespace: str
) -> None:
    """announced.py writes Dramatiq's enqueue by hand (for the wake-up in the same round
    trip): Dramatiq's own consumer must take it as one of its own."""
    assert ours.wake_ups_enabled
    sent = ours.enqueue(_message())
    keys = queue_keys(redis_namespace, QUEUE)
    control = plain.enqueue(_message())
    stored = [
        set(plain.client.hgetall(keys.ready_bodies)),
        plain.client.lrange(keys.ready, 0, -1),
    ]
    assert stored == [
        {sent.options["redis_message_id"].encode(), control.options["redis_message_id"].encode()},
        [sent.options["redis_message_id"].encode(), control.options["redis_message_id"].encode()],
    ]
    consumer = plain.consume(QUEUE, prefetch=2, timeout=100)
    try:
        taken = next(consumer)
        assert taken is not None and taken.message_id == sent.message_id
        assert taken.options == sent.options
        consumer.ack(taken)
    finally:
        consumer.close()
    assert not plain.client.hexists(keys.ready_bodies, sent.options["redis_message_id"])


# --- public seams we override or wrap: still there, same shape ------------------------


@pytest.mark.parametrize(
    ("ours_", "theirs", "names"),
    [
        (SafeRedisBroker, RedisBroker, ["consume", "enqueue", "close"]),
        (SafeRabbitmqBroker, RabbitmqBroker, ["consume", "declare_queue"]),
        (AdmittingConsumer, Consumer, ["__next__", "ack", "nack", "requeue", "close"]),
        (AdmittingRabbitmqConsumer, Consumer, ["__next__", "ack", "nack", "requeue", "close"]),
        (Delivery, MessageProxy, ["stuff_exception", "clear_exception"]),
    ],
)
def test_what_we_override_is_upstreams_with_the_same_parameters(
    ours_: type, theirs: type, names: list[str]
) -> None:
    for name in names:
        upstream = getattr(theirs, name)
        assert name in vars(ours_), f"{ours_.__name__}.{name}"
        wanted = list(inspect.signature(upstream).parameters)
        got = list(inspect.signature(getattr(ours_, name)).parameters)
        assert got[: len(wanted)] == wanted, f"{theirs.__name__}.{name}: {wanted} vs {got}"
    assert issubclass(ours_, theirs)
    assert issubclass(RedisBroker, Broker) and issubclass(RabbitmqBroker, Broker)


def test_a_message_proxy_forwards_the_message_api() -> None:
    message = _message()
    proxy = Delivery(message)
    assert proxy.options is message.options and proxy.message_id == message.message_id
    copied = proxy.copy(options={"traceback": "why"})
    assert copied.options["traceback"] == "why" and copied.message_id == message.message_id
    assert dramatiq.Message.decode(copied.encode()).options["traceback"] == "why"


# --- what Dramatiq's worker does with our consumers' deliveries -----------------------


class _FailingError(Exception):
    pass


def test_the_worker_stuffs_a_failure_into_our_delivery_and_announces_its_threads(
    ours: SafeRedisBroker, redis_namespace: str
) -> None:
    watchdog = Watchdog(interval_s=3600)
    ours.add_middleware(watchdog)
    ran = threading.Event()

    @dramatiq.actor(
        actor_name="contract.fails", queue_name=QUEUE, broker=ours, throws=(_FailingError,)
    )
    def fails(payload: dict[str, Any]) -> None:
        ran.set()
        raise _FailingError("the reason")

    worker = dramatiq.Worker(ours, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        fails.send({"n": 1})
        keys = queue_keys(redis_namespace, QUEUE)
        deadline = time.monotonic() + 20
        while not ours.client.zcard(keys.dead) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ran.is_set()
        bodies: Any = ours.client.hvals(keys.dead_bodies)
        [body] = bodies
        traceback = dramatiq.Message.decode(body).options["traceback"]
        # The error our Delivery was handed (scrubbed: domain.errors.failure_reason).
        assert "_FailingError" in traceback, traceback
        labels = watchdog.threads.labels()
    finally:
        worker.stop()
    # One consumer thread for the queue, one for its delay queue.
    assert sum(label.startswith("consumer thread ") for label in labels) == 2
    assert sum(label.startswith("worker thread ") for label in labels) == 2


# --- RabbitMQ ---------------------------------------------------------------------------


def test_a_rabbitmq_queue_that_went_away_is_declared_again_on_consume() -> None:
    with rabbitmq_vhost("contract") as url:
        broker = SafeRabbitmqBroker(url=url)
        try:
            broker.declare_queue(QUEUE)
            broker.consume(QUEUE, timeout=100).close()
            with pika.BlockingConnection(pika.URLParameters(url)) as connection:
                connection.channel().queue_delete(QUEUE)
            redeclare_on_consume(broker, dq_name(QUEUE))
            consumer = broker.consume(QUEUE, timeout=100)
            consumer.close()
            with pika.BlockingConnection(pika.URLParameters(url)) as connection:
                connection.channel().queue_declare(QUEUE, passive=True)  # 404 if missing
                connection.channel().queue_declare(xq_name(QUEUE), passive=True)
        finally:
            broker.close()
    assert RabbitmqDelivery(_message(), tag=1, redelivered=False).tag == 1


def test_our_classic_declarations_are_dramatiqs() -> None:
    """RabbitMQ refuses a declaration whose arguments differ from the queue's: queues
    Dramatiq declared (an earlier version of ours) and ours must compare equal, both
    ways round."""
    for first, second in (
        (RabbitmqBroker, SafeRabbitmqBroker),
        (SafeRabbitmqBroker, RabbitmqBroker),
    ):
        with rabbitmq_vhost("contract") as url:
            for kind in (first, second):
                broker = kind(url=url)
                try:
                    broker.declare_queue(QUEUE, ensure=True)  # 406 if they differ
                finally:
                    broker.close()


def test_dramatiqs_enqueue_declares_through_our_declare_queue() -> None:
    """Dramatiq's enqueue declares a queue through the public ``declare_queue`` (ours:
    quorum here), and again when a confirmed publish finds it gone (it marks it in
    ``queues_pending``, which ``declaration_pending`` reads)."""
    with rabbitmq_vhost("contract") as url:
        broker = SafeRabbitmqBroker(url=url, queue_type="quorum")
        try:
            broker.declare_queue(QUEUE)
            assert declaration_pending(broker, QUEUE)
            broker.enqueue(_message())
            assert not declaration_pending(broker, QUEUE)
            with pika.BlockingConnection(pika.URLParameters(url)) as connection:
                channel = connection.channel()
                declare_queues(channel, QUEUE, "quorum")  # refused unless quorum
                channel.queue_delete(QUEUE)
            broker.enqueue(_message())  # unroutable, declared again, published
            with pika.BlockingConnection(pika.URLParameters(url)) as connection:
                channel = connection.channel()
                declare_queues(channel, QUEUE, "quorum")
                assert channel.queue_declare(QUEUE, passive=True).method.message_count == 1
        finally:
            broker.close()


# --- the fetch we rewrote (redis_keys._FETCH_UNLESS_PAUSED) and what ack_and_fetch calls --

RECOPY = (
    "re-copy dispatch.lua's fetch (the heartbeat's ZADD, the LPOP loop into the acks set, "
    "the HMGET) into workers/messaging/redis_keys.py's _FETCH_UNLESS_PAUSED, check "
    "RedisCommands._dispatch's arguments, then update the pinned text in this test"
)
# dispatch.lua as we copied it (dramatiq 2.2.1), comments dropped, whitespace collapsed:
# the script's arguments in order, the keys the fetch touches, the fetch itself.
UPSTREAM_ARGUMENTS = [
    "command",
    "timestamp",
    "queue_name",
    "worker_id",
    "heartbeat_timeout",
    "dead_message_ttl",
    "do_maintenance",
    "max_unpack_size",
]
UPSTREAM_KEYS = [
    'local acks = namespace .. ":__acks__." .. worker_id',
    'local heartbeats = namespace .. ":__heartbeats__"',
    'redis.call("zadd", heartbeats, timestamp, worker_id)',
    'local queue_acks = acks .. "." .. queue_name',
    'local queue_full_name = namespace .. ":" .. queue_name',
    'local queue_messages = queue_full_name .. ".msgs"',
]
UPSTREAM_FETCH = (
    "local prefetch = math.min(ARGS[1], max_unpack_size) local message_ids = {} "
    'for i=1,prefetch do local message_id = redis.call("lpop", queue_full_name) '
    "if not message_id then break end message_ids[i] = message_id "
    'redis.call("sadd", queue_acks, message_id) end if next(message_ids) ~= nil then '
    'return redis.call("hmget", queue_messages, unpack(message_ids)) else return {} end'
)


def _lua(broker: RedisBroker) -> str:
    """The dispatch script this Dramatiq runs, comments dropped, whitespace collapsed."""
    script: Any = broker.scripts["dispatch"].script
    text = script.decode() if isinstance(script, bytes) else str(script)
    lines = [line.split("--", 1)[0] for line in text.splitlines()]
    return " ".join(" ".join(lines).split())


def test_dispatch_luas_fetch_is_what_our_fetch_copies(plain: RedisBroker) -> None:
    lua = _lua(plain)
    arguments = re.findall(r"local (\w+) = ARGV\[(\d+)\]", lua)
    assert arguments == [(n, str(i)) for i, n in enumerate(UPSTREAM_ARGUMENTS, 1)], (
        f"dispatch.lua's arguments changed ({arguments}): {RECOPY}"
    )
    for line in UPSTREAM_KEYS:
        assert line in lua, f"dispatch.lua no longer has `{line}`: {RECOPY}"
    found = re.search(r'elseif command == "fetch" then (.*?) elseif command ==', lua)
    assert found is not None, f"dispatch.lua has no fetch command any more: {RECOPY}"
    assert found.group(1) == UPSTREAM_FETCH, (
        f"dispatch.lua's fetch changed:\n  now: {found.group(1)}\n  was: {UPSTREAM_FETCH}\n"
        + RECOPY
    )


def test_the_underscore_methods_ack_and_fetch_calls_are_there() -> None:
    """RedisCommands.ack_and_fetch calls them as RedisBroker._dispatch does."""
    wanted = {"_should_do_maintenance": ["self", "command"], "_max_unpack_size": ["self"]}
    for name, parameters in wanted.items():
        method = getattr(RedisBroker, name, None)
        assert callable(method), f"RedisBroker.{name} is gone: {RECOPY}"
        got = list(inspect.signature(method).parameters)
        assert got == parameters, f"RedisBroker.{name}{got} (was {parameters}): {RECOPY}"


def _stored(client: Any, namespace: str, broker_id: str) -> dict[str, Any]:
    """Every key of a namespace and its content, the namespace and the broker's id
    replaced (two brokers compare equal when they left the same things); the
    heartbeats' scores (timestamps) are left out."""

    def name(raw: Any) -> str:
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return text.replace(namespace, "NS").replace(broker_id, "WORKER")

    stored: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{namespace}:*"):
        kind = client.type(key).decode()
        content: Any
        if kind == "list":
            content = client.lrange(key, 0, -1)
        elif kind == "hash":
            content = client.hgetall(key)
        elif kind == "set":
            content = sorted(client.smembers(key))
        elif kind == "zset":
            content = sorted(name(member) for member in client.zrange(key, 0, -1))
        else:
            content = kind
        stored[name(key)] = content
    return stored


@pytest.mark.parametrize(
    ("delay", "first", "second"),
    [(None, 2, 5), (None, 5, 1), (60_000, 1, 3)],
    ids=["fewer-then-more", "more-than-stored", "delay-queue"],
)
def test_our_fetch_leaves_what_dramatiqs_fetch_leaves(
    redis_server_url: str, redis_namespace: str, delay: int | None, first: int, second: int
) -> None:
    """The same messages in two namespaces; Dramatiq's fetch, ack and fetch in one, our
    ack_and_fetch in the other: same bodies back, same keys and contents left (acks
    set, heartbeat, queue, bodies)."""
    spaces = {side: f"{redis_namespace}.{side}" for side in ("theirs", "ours")}
    brokers = {
        side: RedisBroker(url=redis_server_url, namespace=ns, maintenance_chance=0)  # type: ignore[no-untyped-call]
        for side, ns in spaces.items()
    }
    try:
        theirs, ours_ = brokers["theirs"], brokers["ours"]
        client: Any = theirs.client
        sent = [theirs.enqueue(_message(), delay=delay) for _ in range(4)]
        queue = sent[0].queue_name  # QUEUE, or its delay queue
        for key in client.scan_iter(match=f"{spaces['theirs']}:*"):
            copied = key.decode().replace(spaces["theirs"], spaces["ours"], 1)
            client.restore(copied, 0, client.dump(key))
        client.delete(heartbeats(spaces["theirs"]), heartbeats(spaces["ours"]))
        commands = RedisCommands(ours_, queue)

        def compare(step: str) -> None:
            left = [_stored(client, spaces[s], brokers[s].broker_id) for s in ("theirs", "ours")]
            assert left[0] == left[1], (
                f"after {step}: Dramatiq's {left[0]} ours {left[1]}: {RECOPY}"
            )

        got_theirs: Any = theirs.do_fetch(queue, first)
        got_ours = commands.ack_and_fetch([], first)
        assert got_ours.state == "ok" and got_ours.bodies == list(got_theirs), RECOPY
        assert got_ours.bodies, "nothing fetched: the test would compare nothing"
        compare(f"a fetch of {first}")

        done = sent[0].options["redis_message_id"]
        theirs.do_ack(queue, done)
        got_theirs = theirs.do_fetch(queue, second)
        got_ours = commands.ack_and_fetch([done], second)
        assert got_ours.bodies == list(got_theirs), RECOPY
        compare(f"an ack and a fetch of {second}")
    finally:
        for broker in brokers.values():
            broker.close()


def test_ack_and_fetch_runs_dramatiqs_maintenance(
    redis_server_url: str, redis_namespace: str
) -> None:
    """When Dramatiq would maintain on a fetch, our fetch runs its script for it: a
    dead worker's message goes back to the queue (and is fetched)."""
    broker = RedisBroker(  # type: ignore[no-untyped-call]
        url=redis_server_url, namespace=redis_namespace, maintenance_chance=MAINTENANCE_SCALE
    )
    try:
        client = broker.client
        keys = queue_keys(redis_namespace, QUEUE)
        held = broker.enqueue(_message()).options["redis_message_id"]
        assert client.lpop(keys.ready) == held.encode()
        client.sadd(keys.acks("dead-worker"), held)
        client.zadd(heartbeats(redis_namespace), {"dead-worker": 0})
        got = RedisCommands(broker, QUEUE).ack_and_fetch([], 1)
        assert got.bodies == [client.hget(keys.ready_bodies, held)], (
            f"Dramatiq's maintenance did not give back a dead worker's message: {RECOPY}"
        )
        assert not client.exists(keys.acks("dead-worker"))
    finally:
        broker.close()
