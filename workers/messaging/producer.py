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

With tracing on (workers/observability/tracing.py), each message gets a publish span,
a child of the current one, and carries it in ``options.trace_context``; off, nothing
is added to the envelope.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
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
from workers.observability import metrics, tracing

PIPELINE_BATCH = 500
T = TypeVar("T")
log = get_logger("emotionviz.producer")


def envelope(message: MessageV1, options: dict[str, Any] | None = None) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=message.queue_name,
        actor_name=message.actor_name,
        args=(message.to_payload(),),
        kwargs={},
        options=options or {},
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


# The ids a message's publish span names (never its other fields).
_SPAN_IDS = ("entry_id", "session_id")


def _span_ids(message: MessageV1) -> dict[str, str]:
    return {key: str(getattr(message, key)) for key in _SPAN_IDS if hasattr(message, key)}


def _start_publish(message: MessageV1) -> tuple[Any, dict[str, Any]] | None:
    """The publish span and its options, or None when tracing fails here: the message
    is then published untraced (tracing never refuses a publish; one warning line)."""
    try:
        return tracing.start_publish(message.actor_name, message.queue_name, _span_ids(message))
    except Exception as exc:  # noqa: BLE001 - a publish follows a commit: it must not fail
        log.warning(
            "publish untraced: the publish span could not be started",
            actor=message.actor_name,
            reason=type(exc).__name__,
        )
        return None


@contextlib.contextmanager
def request_span(operation: str, *, step: int | None = None, **ids: object) -> Iterator[None]:
    """The producer API's span around one request (its unit of work and the publish
    span nest under it): ``ids`` as references, the intake ``step`` as it is; nothing
    when tracing is off."""
    if tracing.tracer() is None:
        yield
        return
    attributes: dict[str, str | int] = dict(tracing.refs(ids))
    if step is not None:
        attributes["emotionviz.step"] = step
    with tracing.span(f"producer_api.{operation}", attributes):
        yield


class Producer:
    def __init__(self, broker: dramatiq.Broker) -> None:
        self.broker = broker
        tracing.resolve()  # every publishing process decides once, before its first unit

    def publish(self, message: MessageV1, *, delay_ms: int | None = None) -> str:
        if tracing.tracer() is None:
            return self._publish(message, delay_ms, None)
        started = _start_publish(message)
        if started is None:
            return self._publish(message, delay_ms, None)
        opened, options = started
        try:
            sent_id = self._publish(message, delay_ms, options)
        except BaseException as exc:
            tracing.end(opened, exc)
            raise
        tracing.end(opened, message_id=sent_id)
        return sent_id

    def _publish(
        self, message: MessageV1, delay_ms: int | None, options: dict[str, Any] | None
    ) -> str:
        sent = _retrying(f"{message.actor_name} message")(
            lambda: self.broker.enqueue(envelope(message, options), delay=delay_ms)
        )
        return str(sent.message_id)

    def publish_many(self, messages: Sequence[MessageV1]) -> list[str]:
        return _retrying(f"{len(messages)} messages")(lambda: self._publish_many(messages))

    def _publish_many(self, messages: Sequence[MessageV1]) -> list[str]:
        items = list(messages)
        if not isinstance(self.broker, RedisBroker):
            return [self.publish(m) for m in items]
        if tracing.tracer() is not None:
            return self._publish_many_traced(items)
        return self._publish_rows(items, [None] * len(items))

    def _publish_many_traced(self, items: list[MessageV1]) -> list[str]:
        """A publish span per message, each message carrying its own."""
        spans: list[Any] = []
        options: list[dict[str, Any] | None] = []
        for item in items:
            started = _start_publish(item)
            if started is None:  # untraced, all of them: end the spans already opened
                for opened in spans:
                    tracing.end(opened)
                return self._publish_rows(items, [None] * len(items))
            spans.append(started[0])
            options.append(started[1])
        try:
            ids = self._publish_rows(items, options)
        except BaseException as exc:
            for opened in spans:
                tracing.end(opened, exc)
            raise
        for opened, sent_id in zip(spans, ids, strict=True):
            tracing.end(opened, message_id=sent_id)
        return ids

    def _publish_rows(
        self, items: list[MessageV1], options: Sequence[dict[str, Any] | None]
    ) -> list[str]:
        assert isinstance(self.broker, RedisBroker)
        ids: list[str] = []
        client = self.broker.client
        for start in range(0, len(items), PIPELINE_BATCH):
            batch = items[start : start + PIPELINE_BATCH]
            rows: list[tuple[str, str, bytes]] = []
            for item, carried in zip(batch, options[start : start + PIPELINE_BATCH], strict=True):
                msg = envelope(item, carried)
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
