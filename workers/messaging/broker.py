"""Builds the one broker of this process, before any actor is imported.

Redis by default (REDIS_URL, or the embedded server); RabbitMQ when BROKER_URL is
amqp://. Middleware: Dramatiq's defaults (age limit, time limit, shutdown, callbacks,
pipelines, retries, current message) with our settings, plus structured logging
context. Worker processes add the metrics middleware (workers/entrypoints/worker.py).
"""

from __future__ import annotations

import json
import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from dramatiq.encoder import Encoder
from dramatiq.errors import DecodeError
from dramatiq.middleware import AgeLimit, CurrentMessage, Retries, ShutdownNotifications, TimeLimit
from dramatiq.middleware.callbacks import Callbacks
from dramatiq.middleware.pipelines import Pipelines

from domain.messages import IntakeStep
from workers.logging import get_logger
from workers.messaging.middleware import LogContext
from workers.messaging.redis_keys import canonical_queue, queue_keys
from workers.settings import Settings

log = get_logger("emotionviz.broker")


class LoggingJSONEncoder(Encoder):
    """Dramatiq's JSON encoding, with a clear log line for a body that is not JSON.

    The consumer below then moves the body to the dead-letter queue.
    """

    def encode(self, data: dict[str, Any]) -> bytes:
        return json.dumps(data, separators=(",", ":")).encode("utf-8")

    def decode(self, data: bytes) -> dict[str, Any]:
        try:
            decoded = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.error(
                "message rejected: body is not valid JSON",
                reason=str(exc),
                body_start=data[:80].decode("utf-8", errors="replace"),
            )
            raise DecodeError("message body is not valid JSON", data, exc) from exc
        if not isinstance(decoded, dict) or "actor_name" not in decoded:
            log.error(
                "message rejected: not a Dramatiq message envelope",
                reason="expected an object with queue_name, actor_name, args, kwargs, options",
                body_start=data[:80].decode("utf-8", errors="replace"),
            )
            raise DecodeError("message is not a Dramatiq envelope", data, ValueError("envelope"))
        return decoded


class QuarantiningConsumer(_RedisConsumer):
    """Dramatiq's Redis consumer, except that an undecodable body is dead-lettered and
    the consumer goes on with the next message. (Dramatiq's own behaviour is to crash
    and restart the consumer, stranding the messages it had prefetched unacked until
    the worker process dies.)"""

    def __next__(self) -> Any:
        while True:
            try:
                return super().__next__()
            except DecodeError as exc:
                self.broker.quarantine(self.queue_name, exc.data)


class SafeRedisBroker(RedisBroker):
    # Dramatiq's Redis consumer polls an empty queue with a backoff that grows up to
    # the worker timeout (1 s): a new message may wait that long. A person waiting for
    # an intake question should not, so a queue can have a shorter ceiling.
    idle_poll_ms: dict[str, int]

    def __init__(self, *args: Any, idle_poll_ms: dict[str, int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.idle_poll_ms = idle_poll_ms or {}

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Any:
        ceiling = self.idle_poll_ms.get(canonical_queue(queue_name), timeout)
        return super().consume(queue_name, prefetch, min(timeout, ceiling))

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return QuarantiningConsumer

    def quarantine(self, queue_name: str, data: bytes) -> None:
        """Move a body we cannot decode into the queue's dead letters.

        Only the body is known here (not its id), so it is found by value in the
        queue's hash: a scan, acceptable for the rare poison message.
        """
        consumed = queue_keys(self.namespace, queue_name)
        canonical = canonical_queue(queue_name)
        dead = queue_keys(self.namespace, canonical)
        for key, value in self.client.hscan_iter(consumed.ready_bodies, count=1000):
            if value == data:
                with self.client.pipeline() as pipe:
                    pipe.zadd(dead.dead, {key: int(time.time() * 1000)})
                    pipe.hset(dead.dead_bodies, key, data)
                    pipe.hdel(consumed.ready_bodies, key)
                    pipe.srem(consumed.acks(self.broker_id), key)
                    pipe.execute()
                log.error(
                    "undecodable message moved to the dead-letter queue",
                    queue=canonical,
                    redis_id=key.decode(errors="replace"),
                )
                return
        log.error("undecodable message dropped: not found in the queue hash", queue=canonical)


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
    ]
    broker: dramatiq.Broker
    broker_url = settings.broker_url.get_secret_value() if settings.broker_url else None
    if broker_url and broker_url.startswith("amqp"):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=broker_url, middleware=middleware)
    else:
        broker = SafeRedisBroker(
            url=broker_url or redis_url,
            namespace=settings.redis_namespace,
            middleware=middleware,
            # A worker that stops heart-beating for this long is dead: its unacked
            # messages go back to the queue.
            heartbeat_timeout=60_000,
            idle_poll_ms={IntakeStep.queue_name: settings.intake_idle_poll_ms},
        )
    dramatiq.set_encoder(LoggingJSONEncoder())
    dramatiq.set_broker(broker)
    return broker
