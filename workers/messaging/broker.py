"""Builds the one broker of this process, before any actor is imported.

Redis by default (REDIS_URL, or the embedded server); RabbitMQ when BROKER_URL is
amqp://. Middleware: Dramatiq's defaults (age limit, time limit, shutdown, callbacks,
pipelines, retries, current message) with our settings, plus structured logging
context and scrubbed failure reasons. Worker processes add the metrics middleware
(workers/entrypoints/worker.py).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis, dq_name
from dramatiq.encoder import Encoder
from dramatiq.errors import DecodeError
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries, ShutdownNotifications, TimeLimit
from dramatiq.middleware.callbacks import Callbacks
from dramatiq.middleware.pipelines import Pipelines

from domain.messages import IntakeStep
from workers.logging import get_logger
from workers.messaging.announced import AnnouncedEnqueue, Row
from workers.messaging.consumer import AdmittingConsumer
from workers.messaging.delivery import dead_letter_record
from workers.messaging.envelope import summary
from workers.messaging.middleware import LogContext, ScrubFailures
from workers.messaging.redis_clients import pooled_client
from workers.messaging.redis_keys import RedisCommands, canonical_queue, queue_keys
from workers.messaging.wake_ups import WakeUps, channel
from workers.settings import Settings

log = get_logger("emotionviz.broker")


class LoggingJSONEncoder(Encoder):
    """Dramatiq's JSON encoding. Decoding (used by the RabbitMQ consumer; the Redis one
    judges bodies itself: workers/messaging/envelope.py) refuses anything but an
    object, with a bounded log line."""

    def encode(self, data: dict[str, Any]) -> bytes:
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            decoded = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.error("message rejected: body is not valid JSON", **summary(data))
            raise DecodeError("message body is not valid JSON", data, exc) from exc
        if not isinstance(decoded, dict) or "actor_name" not in decoded:
            log.error("message rejected: not a Dramatiq message envelope", **summary(data))
            raise DecodeError("message is not a Dramatiq envelope", data, ValueError("envelope"))
        return decoded


class SafeRedisBroker(RedisBroker):
    """Dramatiq's Redis broker with our consumer (workers/messaging/consumer.py), which
    admits only envelopes it can route, and the Redis writes that consumer needs; an
    enqueue onto an empty queue wakes its idle consumers (workers/messaging/wake_ups.py)."""

    # Dramatiq's Redis consumer polls an empty queue with a backoff that grows up to
    # the worker timeout (1 s). Wake-ups end that wait when a message is announced; a
    # queue can also have a shorter ceiling for messages nobody announces
    # (INTAKE_IDLE_POLL_MS).
    idle_poll_ms: dict[str, int]

    def __init__(
        self,
        *args: Any,
        idle_poll_ms: dict[str, int] | None = None,
        max_message_bytes: int = 64 * 1024,
        wake_ups: bool = True,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.idle_poll_ms = idle_poll_ms or {}
        self.max_message_bytes = max_message_bytes
        self._restate_script = self.client.register_script(_RESTATE_IF_PRESENT)
        # Announce (PUBLISH) on enqueue, and wait on wake-ups when idle.
        self.wake_ups_enabled = wake_ups
        self.wake_channel = channel(self.namespace)
        self._wake_ups: WakeUps | None = None
        self._announced_enqueue = AnnouncedEnqueue(self.client, self.namespace, self.wake_channel)
        # Rebuilds the paused queues' mirror from PostgreSQL (set by the worker module:
        # workers/operations/pauses.py: restore_mirror). With it, a fetch that finds the
        # mirror missing takes nothing; without it (tools, tests), the mirror only
        # pauses what it names (workers/messaging/pauses.py).
        self.pause_source: Callable[[], object] | None = None
        self._pauses_restored = False
        self._pauses_lock = threading.Lock()

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> AdmittingConsumer:
        ceiling = self.idle_poll_ms.get(canonical_queue(queue_name), timeout)
        strict = self.pause_source is not None
        if strict:
            with self._pauses_lock:  # the worker's start: the mirror as PostgreSQL says
                first, self._pauses_restored = not self._pauses_restored, True
            if first:
                self.restore_pauses()
        commands = RedisCommands(self, queue_name, strict_pauses=strict)
        return AdmittingConsumer(self, commands, prefetch, min(timeout, ceiling))

    def restore_pauses(self) -> bool:
        """Rebuild the paused queues' mirror from PostgreSQL; False (logged) when it
        could not (the consumers keep fetching nothing while the mirror is missing)."""
        from workers.messaging.pause_sync import restore_mirror

        return restore_mirror(self.pause_source)

    def actor_queues(self) -> Mapping[str, str]:
        """Each declared actor's queue (what the consumer admits)."""
        return {name: self.get_actor(name).queue_name for name in self.get_declared_actors()}

    def wake_ups(self) -> WakeUps | None:
        """This process's wake-up subscriber (started on first use), or None when
        wake-ups are off."""
        if not self.wake_ups_enabled:
            return None
        if self._wake_ups is None:
            self._wake_ups = WakeUps(self.client.connection_pool, self.namespace)
        return self._wake_ups

    def close(self) -> None:
        if self._wake_ups is not None:
            self._wake_ups.close()
        super().close()

    # --- enqueue, announced -------------------------------------------------------------

    def enqueue(
        self, message: dramatiq.Message[Any], *, delay: int | None = None
    ) -> dramatiq.Message[Any]:
        """What Actor.send, Retries and the delayed-message mover call: Dramatiq's
        enqueue (the same copies, hooks and stored body), announced
        (workers/messaging/announced.py). Without wake-ups, Dramatiq's own."""
        if not self.wake_ups_enabled:
            return super().enqueue(message, delay=delay)
        queue_name = message.queue_name
        # A Redis id of its own: a retried message keeps its message id.
        message = message.copy(options={"redis_message_id": str(uuid.uuid4())})
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
        self.emit_before("enqueue", message, delay)
        self.enqueue_rows([(queue_name, message.options["redis_message_id"], message.encode())])
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_rows(self, rows: Sequence[Row]) -> None:
        """Enqueue encoded messages (queue, redis message id, body) in one round trip,
        announced unless wake-ups are off (then exactly as Dramatiq stores them)."""
        if not self.wake_ups_enabled:
            with self.client.pipeline(transaction=False) as pipe:
                for queue_name, redis_id, body in rows:
                    keys = queue_keys(self.namespace, queue_name)
                    pipe.hset(keys.ready_bodies, redis_id, body)
                    pipe.rpush(keys.ready, redis_id)
                pipe.execute()
            return
        outcome = self._announced_enqueue(rows)
        if outcome.refused is not None:
            self._refuse_wake_ups(outcome.refused)

    def announce(self, queue_names: list[str]) -> None:
        """Wake the idle consumers of ``queue_names`` (best effort)."""
        if not self.wake_ups_enabled:
            return
        try:
            for queue_name in dict.fromkeys(queue_names):
                self.client.publish(self.wake_channel, queue_name)
        except redis.RedisError:
            log.debug("wake-up not sent", exc_info=True)

    def _refuse_wake_ups(self, reason: str) -> None:
        self.wake_ups_enabled = False
        log.warning(
            "Redis refused the wake-up PUBLISH; consumers poll every second instead",
            reason=reason[:200],
        )

    def stored_bodies(self, queue_name: str, redis_ids: list[str]) -> list[bytes | None]:
        """The bodies stored under ``redis_ids`` in the queue's hash (one round trip)."""
        bodies = queue_keys(self.namespace, queue_name).ready_bodies
        found: Any = self.client.hmget(bodies, redis_ids)
        return list(found)

    def restate(self, queue_name: str, redis_id: str, body: bytes) -> None:
        """Store ``body`` under ``redis_id`` if a body is still stored there (the nack
        that follows moves the stored body to the dead letters)."""
        keys = queue_keys(self.namespace, queue_name)
        self._restate_script(keys=[keys.ready_bodies], args=[redis_id, body])

    def dead_letter_rejected(
        self, queue_name: str, rejected: list[tuple[bytes | None, str]]
    ) -> None:
        """Dead-letter bodies the consumer refused, acknowledged: nothing of them stays
        in the queue's hash or this worker's acks set. One log line each.

        A refused body's own claims (its redis_message_id) cannot be trusted, so its key
        is found among the ids this worker holds unacknowledged (a few per thread): the
        fetch that returned it has just added it there.
        """
        consumed = queue_keys(self.namespace, queue_name)
        dead = queue_keys(self.namespace, canonical_queue(queue_name)).dead
        dead_bodies = queue_keys(self.namespace, canonical_queue(queue_name)).dead_bodies
        acks = consumed.acks(self.broker_id)
        held: Any = sorted(self.client.smembers(acks))
        stored: Any = self.client.hmget(consumed.ready_bodies, held) if held else []
        keys_of: dict[bytes | None, list[bytes]] = {}
        for key, body in zip(held, stored, strict=True):
            keys_of.setdefault(body, []).append(key)
        now_ms = int(time.time() * 1000)
        with self.client.pipeline(transaction=True) as pipe:
            for body, reason in rejected:
                if body is None:
                    # Ids pushed without a body: nothing to keep, the ids to drop.
                    orphans, keys_of[None] = keys_of.get(None, []), []
                    if orphans:
                        pipe.srem(acks, *orphans)
                    log.error("message rejected before routing", reason=reason, queue=queue_name)
                    continue
                key = keys_of[body].pop() if keys_of.get(body) else None
                if key is not None:
                    pipe.zadd(dead, {key: now_ms})
                    pipe.hset(
                        dead_bodies, key, dead_letter_record(body, reason, self.max_message_bytes)
                    )
                    pipe.hdel(consumed.ready_bodies, key)
                    pipe.srem(acks, key)
                log.error(
                    "message rejected before routing",
                    reason=reason,
                    queue=queue_name,
                    redis_id=key.decode(errors="replace")[:64] if key else None,
                    dead_lettered=key is not None,
                    **summary(body),
                )
            pipe.execute()


# Replace a stored body only if it is still there (HSET alone would re-create it).
_RESTATE_IF_PRESENT = """
if redis.call("hexists", KEYS[1], ARGV[1]) == 1 then
    redis.call("hset", KEYS[1], ARGV[1], ARGV[2])
end
"""


def build_broker(settings: Settings, redis_url: str) -> dramatiq.Broker:
    middleware = [
        AgeLimit(max_age=settings.message_max_age_ms),
        TimeLimit(time_limit=settings.job_time_limit_ms),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(
            max_retries=settings.max_retries,
            min_backoff=settings.min_backoff_ms,
            max_backoff=settings.max_backoff_ms,
        ),
        CurrentMessage(),
        LogContext(),
        ScrubFailures(),
    ]
    broker: dramatiq.Broker
    broker_url = settings.broker_url.get_secret_value() if settings.broker_url else None
    if broker_url and broker_url.startswith("amqp"):
        from workers.messaging.rabbitmq import SafeRabbitmqBroker  # needs the rabbitmq extra

        broker = SafeRabbitmqBroker(
            url=broker_url,
            middleware=middleware,
            max_message_bytes=settings.max_message_bytes,
            queue_type=settings.rabbitmq_queue_type,
        )
    else:
        broker = SafeRedisBroker(
            # A blocking pool: with hundreds of worker threads retrying at once, the
            # default pool's 101st connection failed (workers/messaging/redis_clients.py).
            client=pooled_client(broker_url or redis_url, settings.redis_max_connections),
            namespace=settings.redis_namespace,
            middleware=middleware,
            # A worker that stops heart-beating for this long is dead: its unacked
            # messages go back to the queue.
            heartbeat_timeout=60_000,
            idle_poll_ms={IntakeStep.queue_name: settings.intake_idle_poll_ms},
            max_message_bytes=settings.max_message_bytes,
        )
    dramatiq.set_encoder(LoggingJSONEncoder())
    dramatiq.set_broker(broker)
    return broker


def declare_queues_now(broker: dramatiq.Broker) -> None:
    """RabbitMQ: declare the actors' queues now, so that a queue of the other type
    (RABBITMQ_QUEUE_TYPE) stops a worker at boot with ConfigurationError. Redis: nothing
    to declare."""
    if isinstance(broker, SafeRedisBroker):
        return
    from workers.messaging.rabbitmq import SafeRabbitmqBroker  # needs the rabbitmq extra

    if isinstance(broker, SafeRabbitmqBroker):
        broker.declare_all()


def watch_pauses(
    broker: dramatiq.Broker,
    restore: Callable[[], object],
    read: Callable[[], Mapping[str, str] | None],
    sync: Callable[[], object] | None = None,
    sync_every_s: float = 5.0,
) -> None:
    """Make this worker hold to the paused queues (workers/messaging/pauses.py):
    ``restore`` rebuilds the Redis mirror from PostgreSQL (at the first consume and
    whenever it is found missing); ``read`` reads the mirror (RabbitMQ's consumers,
    which look every half second; on Redis the fetch script reads it itself); ``sync``
    compares the mirror with PostgreSQL and rewrites a stale one, every
    ``sync_every_s`` and after a Redis failover (workers/messaging/pause_sync.py)."""
    if sync is not None:
        from workers.messaging.pause_sync import PauseSync

        broker.add_middleware(PauseSync(sync, sync_every_s))
    if isinstance(broker, SafeRedisBroker):
        broker.pause_source = restore
        return
    from workers.messaging.rabbitmq import SafeRabbitmqBroker  # needs the rabbitmq extra

    if isinstance(broker, SafeRabbitmqBroker):
        broker.pause_source = restore
        broker.pause_reader = read
