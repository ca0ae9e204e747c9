"""The producer: the one object that sends messages to the broker.

- ``publish(msg, delay_ms=None)``: one message (deferrals pass a delay).
- ``publish_many(msgs)``: many, pipelined into one Redis round trip per batch.

A broker that drops the connection or times out is retried a few times with
exponential backoff and jitter (tenacity); past that, ``BrokerUnavailableError``.
Duplicates a retry may cause are harmless: handlers are idempotent.

Messages that follow a database change go through ``UnitOfWork.publish`` (db/uow.py),
which calls this after commit; upstream services use workers/producer_api.py, which
does the same. Non-Python producers write the same envelope to Redis:
docs/messages.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import dramatiq
import redis
import tenacity
from dramatiq.brokers.redis import RedisBroker

from domain.errors import BrokerUnavailableError
from domain.messages import MessageV1
from workers.logging import get_logger
from workers.messaging.broker import SafeRedisBroker
from workers.messaging.redis_keys import queue_keys
from workers.observability import metrics

PIPELINE_BATCH = 500
T = TypeVar("T")
log = get_logger("emotionviz.producer")


def envelope(message: MessageV1) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=message.queue_name,
        actor_name=message.actor_name,
        args=(message.to_payload(),),
        kwargs={},
        options={},
        message_id=str(uuid.uuid4()),
        message_timestamp=int(time.time() * 1000),
    )


PUBLISH_ATTEMPTS = 4
PUBLISH_MAX_SECONDS = 10.0


def _broker_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        redis.ConnectionError,
        redis.TimeoutError,
        dramatiq.errors.BrokerConnectionError,
    ]
    try:
        import pika.exceptions

        errors.append(pika.exceptions.AMQPConnectionError)
    except ImportError:  # the rabbitmq extra is not installed
        pass
    return tuple(errors)


BROKER_ERRORS = _broker_errors()


def _retrying(what: str) -> Callable[[Callable[[], T]], T]:
    def run(call: Callable[[], T]) -> T:
        try:
            for attempt in tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(BROKER_ERRORS),
                stop=tenacity.stop_after_attempt(PUBLISH_ATTEMPTS)
                | tenacity.stop_after_delay(PUBLISH_MAX_SECONDS),
                wait=tenacity.wait_exponential_jitter(initial=0.2, max=3.0),
                before_sleep=lambda state: log.warning(
                    "broker unavailable, publishing again",
                    what=what,
                    attempt=state.attempt_number,
                    reason=str(state.outcome.exception() if state.outcome else "")[:200],
                ),
                reraise=True,
            ):
                with attempt:
                    return call()
        except BROKER_ERRORS as exc:
            metrics.count_publish_failure()
            raise BrokerUnavailableError(
                f"the broker did not take the {what} after {PUBLISH_ATTEMPTS} attempts: {exc}"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover - Retrying returns or raises

    return run


class Producer:
    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker

    def publish(self, message: MessageV1, *, delay_ms: int | None = None) -> str:
        sent = _retrying(f"{message.actor_name} message")(
            lambda: self.broker.enqueue(envelope(message), delay=delay_ms)
        )
        return str(sent.message_id)

    def publish_many(self, messages: Sequence[MessageV1]) -> list[str]:
        return _retrying(f"{len(messages)} messages")(lambda: self._publish_many(messages))

    def _publish_many(self, messages: Sequence[MessageV1]) -> list[str]:
        items = list(messages)
        if not isinstance(self.broker, RedisBroker):
            return [self.publish(m) for m in items]
        ids: list[str] = []
        client = self.broker.client
        for start in range(0, len(items), PIPELINE_BATCH):
            batch = items[start : start + PIPELINE_BATCH]
            rows: list[tuple[str, str, bytes]] = []
            for item in batch:
                msg = envelope(item)
                # Exactly what the broker's enqueue script does: the body in the
                # queue's hash under a unique id, that id pushed on the queue list.
                redis_id = str(uuid.uuid4())
                msg = msg.copy(options={"redis_message_id": redis_id})
                rows.append((msg.queue_name, redis_id, msg.encode()))
                ids.append(msg.message_id)
            if isinstance(self.broker, SafeRedisBroker):
                self.broker.enqueue_rows(rows)  # and the wake-ups, in the same round trip
                continue
            with client.pipeline(transaction=False) as pipe:
                for queue_name, redis_id, body in rows:
                    keys = queue_keys(self.broker.namespace, queue_name)
                    pipe.hset(keys.ready_bodies, redis_id, body)
                    pipe.rpush(keys.ready, redis_id)
                pipe.execute()
        return ids
