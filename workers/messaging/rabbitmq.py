"""Dramatiq's RabbitMQ broker with our admission checks and failure reasons.

Dramatiq's RabbitMQ consumer nacks a body it cannot decode (RabbitMQ moves it to
``<queue>.XQ``), but routes anything that decodes, so an unknown actor or queue, or
options of the wrong type, break a worker thread as on Redis (workers/messaging/
envelope.py). Here each delivery is judged by the same pure checks first. And a nack
on RabbitMQ dead-letters the body as it arrived, without a word of why; ours
dead-letters it with the reason in ``options.traceback`` (refused bodies: the record
``dead_letter_record`` keeps on Redis too), so ``<queue>.XQ`` says why on both paths.

Dead-lettering is "publish to ``<queue>.XQ``, then ack": not atomic. A connection lost
between the two redelivers the message, which is judged or run again (handlers are
idempotent) and may leave a second dead letter: a duplicate record, never a loss.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pika
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker, _RabbitmqConsumer, _RabbitmqMessage
from dramatiq.common import q_name, xq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from workers.logging import get_logger
from workers.messaging.broker import dead_letter_record
from workers.messaging.consumer import failure_reason
from workers.messaging.envelope import inspect, summary

log = get_logger("emotionviz.consumer")
_PERSISTENT = pika.BasicProperties(delivery_mode=2)
_CHANNEL_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)


class SafeRabbitmqBroker(RabbitmqBroker):
    def __init__(self, *args: Any, max_message_bytes: int = 64 * 1024, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_message_bytes = max_message_bytes

    @property
    def consumer_class(self) -> type[_RabbitmqConsumer]:
        return AdmittingRabbitmqConsumer


class AdmittingRabbitmqConsumer(_RabbitmqConsumer):
    broker: SafeRabbitmqBroker

    def __next__(self) -> MessageProxy | None:
        try:
            method, _properties, body = next(self.iterator)
            if method is None:
                return None
        except (AssertionError, *_CHANNEL_ERRORS) as exc:
            if getattr(exc, "reply_code", None) == 404:  # the queue went away: redeclare it
                self.broker.queues_pending.add(q_name(self.queue_name))
            raise _closed(exc) from None
        actor_queues = {name: actor.queue_name for name, actor in self.broker.actors.items()}
        verdict = inspect(
            body,
            queue=self.queue_name,
            actor_queues=actor_queues,
            max_bytes=self.broker.max_message_bytes,
            redis_id=False,
        )
        if verdict.fields is None:
            # This thread owns the channel: publish and ack directly.
            record = dead_letter_record(body, verdict.problem or "", self.broker.max_message_bytes)
            try:
                self._dead_letter(method.delivery_tag, record)
            except _CHANNEL_ERRORS as exc:
                raise _closed(exc) from None
            log.error(
                "message rejected before routing",
                reason=verdict.problem,
                queue=self.queue_name,
                dead_lettered=True,
                **summary(body),
            )
            return None
        self.known_tags.add(method.delivery_tag)
        message: Message[Any] = Message(**verdict.fields)
        return _RabbitmqMessage(method.redelivered, method.delivery_tag, message)  # type: ignore[no-untyped-call]

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter a failed message with its reason in ``options.traceback``."""
        tag = message._tag
        try:
            self.known_tags.remove(tag)
        except KeyError:  # a tag from before a reconnect: RabbitMQ redelivers it anyway
            log.warning("could not dead-letter a message: its delivery tag is stale")
            return
        body = message._message.copy(options={"traceback": failure_reason(message)}).encode()
        try:
            # Worker threads may not touch the channel: the consumer's thread runs this.
            self.connection.add_callback_threadsafe(partial(self._dead_letter, tag, body))
        except _CHANNEL_ERRORS as exc:
            raise _closed(exc) from None

    def _dead_letter(self, tag: int, body: bytes) -> None:
        self.channel.basic_publish("", xq_name(self.queue_name), body, properties=_PERSISTENT)
        self.channel.basic_ack(tag)


def _closed(exc: BaseException) -> ConnectionClosed:
    return ConnectionClosed(exc)  # type: ignore[no-untyped-call]
