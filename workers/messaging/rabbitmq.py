"""Dramatiq's RabbitMQ broker with our admission checks and failure reasons.

Dramatiq's RabbitMQ consumer nacks a body it cannot decode (RabbitMQ moves it to
``<queue>.XQ``), but routes anything that decodes, so an unknown actor or queue, or
options of the wrong type, break a worker thread as on Redis (workers/messaging/
envelope.py). Here each delivery is judged by the same pure checks first. And a nack
on RabbitMQ dead-letters the body as it arrived, without a word of why; ours
dead-letters it with the reason in ``options.traceback`` (refused bodies: the record
``dead_letter_record`` keeps on Redis too), so ``<queue>.XQ`` says why on both paths.

Publishes go out with publisher confirms: RabbitMQ's nack, a message no queue took
(``mandatory``) or a connection lost before the confirm raises, Dramatiq's enqueue
tries again on a new connection, then the producer (workers/messaging/producer.py)
retries and raises BrokerUnavailableError. The queues are declared by us, classic or
quorum (workers/messaging/rabbitmq_queues.py). ``BROKER_URL`` may name several servers
(``url1;url2``): every connection tries them in order.

A paused queue (``emotionviz queue pause``): each consumer looks at the paused queues'
mirror in Redis (workers/messaging/pauses.py) at most every ``PAUSE_LOOK_S`` (not per
message: RabbitMQ pushes), cancels its basic.consume when its queue is paused (the
deliveries it had not handed on yet go back to the queue; those handed on run to their
end, acked on the open channel) and consumes again on resume.

Dead-lettering is "publish to ``<queue>.XQ``, then ack": not atomic. A connection lost
between the two redelivers the message, which is judged or run again (handlers are
idempotent) and may leave a second dead letter: a duplicate record, never a loss.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import pika
import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import q_name, xq_name
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from workers.logging import get_logger
from workers.messaging.delivery import (
    RabbitmqDelivery,
    dead_letter_record,
    failure_reason,
    with_reason,
)
from workers.messaging.dramatiq_adapter import (
    declaration_pending,
    declared,
    redeclare_on_consume,
)
from workers.messaging.envelope import inspect, summary
from workers.messaging.rabbitmq_queues import QueueType, declare_queues

log = get_logger("emotionviz.consumer")
_PERSISTENT = pika.BasicProperties(delivery_mode=2)
_CHANNEL_ERRORS = (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError)
PAUSE_LOOK_S = 0.5  # how often a consumer reads the paused queues' mirror
# The mirror's pauses (queue -> since), or None when it is missing (rebuild it first).
PauseReader = Callable[[], Mapping[str, str] | None]


def servers(url: str) -> list[str]:
    """One URL per RabbitMQ server (several: ``url1;url2``, tried in order; settings
    validated them: workers/settings.py ``amqp_servers``)."""
    return [one.strip() for one in url.split(";")]


def connection_parameters(url: str) -> list[pika.URLParameters]:
    """pika's parameters for each server of ``url``, as the broker reads them."""
    return [pika.URLParameters(one) for one in servers(url)]


class SafeRabbitmqBroker(RabbitmqBroker):
    def __init__(
        self,
        *,
        url: str,
        max_message_bytes: int = 64 * 1024,
        queue_type: QueueType = "classic",
        confirm_delivery: bool = True,
        **kwargs: Any,
    ) -> None:
        # Dramatiq's confirm_delivery: every publish waits for RabbitMQ's confirm (and
        # is mandatory); off, a publish lost in a node's failover vanished silently.
        super().__init__(url=servers(url), confirm_delivery=confirm_delivery, **kwargs)
        self.max_message_bytes = max_message_bytes
        self.queue_type: QueueType = queue_type
        self.consumer_parameters = connection_parameters(url)
        # Set by the worker module (broker.watch_pauses); None: pauses are not looked at.
        self.pause_reader: PauseReader | None = None
        self.pause_source: Callable[[], object] | None = None

    def declare_queue(self, queue_name: str, *, ensure: bool = False) -> None:
        """Dramatiq's (the queue and its delay queue registered, its hooks), but the
        queues are declared on the server by us, with their type (rabbitmq_queues.py).
        Raises ConfigurationError when one exists with the other type."""
        super().declare_queue(queue_name)
        canonical = q_name(queue_name)
        if ensure and declaration_pending(self, canonical):
            self._declare_on_server(canonical)
            declared(self, canonical)

    def declare_all(self) -> None:
        """Declare the queues of every actor now (a worker at boot): a queue of the
        other type stops the process with one line instead of failing every consumer
        thread in a loop. RabbitMQ not answering is left to the consumers, which retry."""
        for queue_name in sorted(self.get_declared_queues()):
            try:
                self.declare_queue(queue_name, ensure=True)
            except ConnectionClosed as exc:
                log.warning("RabbitMQ did not answer at boot", reason=str(exc)[:200])
                return

    def _declare_on_server(self, canonical: str) -> None:
        # A connection of its own: a refused declaration closes its channel, which
        # must not be the one Dramatiq's enqueue goes on publishing on.
        for attempt in (1, 2):  # as Dramatiq's: once more on a new connection
            try:
                with pika.BlockingConnection(self.consumer_parameters) as connection:
                    declare_queues(connection.channel(), canonical, self.queue_type)
                return
            except _CHANNEL_ERRORS as exc:
                if attempt == 2:
                    raise _closed(exc) from None

    def consume(
        self, queue_name: str, prefetch: int = 1, timeout: int = 5000
    ) -> AdmittingRabbitmqConsumer:
        self.declare_queue(queue_name, ensure=True)  # as Dramatiq's consume does
        return AdmittingRabbitmqConsumer(self, queue_name, prefetch, timeout)

    def queue_paused(self, queue_name: str) -> bool:
        """Whether ``queue_name`` (or the queue its delay queue belongs to) is paused; a
        missing mirror is rebuilt first, and counts as paused until it is (fail closed).
        Redis unreachable: the last answer stands (the caller keeps its state)."""
        if self.pause_reader is None:
            return False
        pauses = self.pause_reader()
        if pauses is None:
            if self.pause_source is None:
                return False
            from workers.messaging.pause_sync import restore_mirror

            if not restore_mirror(self.pause_source):
                return True  # paused until the mirror is back
            pauses = self.pause_reader() or {}
        return q_name(queue_name) in pauses

    def actor_queues(self) -> Mapping[str, str]:
        return {name: self.get_actor(name).queue_name for name in self.get_declared_actors()}


class AdmittingRabbitmqConsumer(Consumer):
    """A consumer of one RabbitMQ queue on its own connection, written on Dramatiq's
    public ``Consumer`` and pika: what Dramatiq's does, plus the admission checks and
    the reasons. Worker threads may not touch the channel: acks and dead letters they
    ask for run on this consumer's thread (``add_callback_threadsafe``)."""

    def __init__(
        self, broker: SafeRabbitmqBroker, queue_name: str, prefetch: int, timeout: int
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        try:
            self.connection = pika.BlockingConnection(parameters=broker.consumer_parameters)
            self.channel = self.connection.channel()
            self.channel.basic_qos(prefetch_count=prefetch)
            self.iterator = self.channel.consume(queue_name, inactivity_timeout=timeout / 1000)
        except _CHANNEL_ERRORS as exc:
            raise _closed(exc) from None
        # Delivery tags of this connection: after a reconnect the old ones are invalid,
        # and pika does not take an unknown tag well.
        self.known_tags: set[int] = set()
        self.prefetch, self.timeout = prefetch, timeout
        self.paused = False
        self._looked_at = 0.0

    def _hold_to_pause(self) -> bool:
        """Look at the pause at most every PAUSE_LOOK_S; cancel or resume consuming.
        True while paused."""
        now = time.monotonic()
        if now - self._looked_at < PAUSE_LOOK_S:
            return self.paused
        self._looked_at = now
        try:
            paused = self.broker.queue_paused(self.queue_name)
        except redis.RedisError as exc:  # Redis unreachable: keep the last state
            log.warning("could not read the paused queues", reason=type(exc).__name__)
            return self.paused
        if paused and not self.paused:
            self.channel.cancel()  # the deliveries not handed on go back to the queue
            log.info("queue paused: taking no message", queue=self.queue_name)
        elif self.paused and not paused:
            self.iterator = self.channel.consume(
                self.queue_name, inactivity_timeout=self.timeout / 1000
            )
            log.info("queue resumed", queue=self.queue_name)
        self.paused = paused
        return paused

    def __next__(self) -> MessageProxy | None:
        try:
            if self._hold_to_pause():
                # Acks and dead letters asked for by worker threads still run here.
                self.connection.process_data_events(time_limit=PAUSE_LOOK_S)
                return None
            method, _properties, body = next(self.iterator)
            if method is None:
                return None
        except (AssertionError, *_CHANNEL_ERRORS) as exc:
            if getattr(exc, "reply_code", None) == 404:  # the queue went away: redeclare it
                redeclare_on_consume(self.broker, self.queue_name)
            raise _closed(exc) from None
        verdict = inspect(
            body,
            queue=self.queue_name,
            actor_queues=self.broker.actor_queues(),
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
        return RabbitmqDelivery(message, tag=method.delivery_tag, redelivered=method.redelivered)

    def ack(self, message: MessageProxy) -> None:
        tag = _tag(message)
        try:
            self.known_tags.remove(tag)
            self.connection.add_callback_threadsafe(partial(self.channel.basic_ack, tag))
        except KeyError:  # a tag from before a reconnect: RabbitMQ redelivers it anyway
            log.warning("could not ack a message: its delivery tag is stale")
        except _CHANNEL_ERRORS as exc:
            raise _closed(exc) from None

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter a failed message with its reason in ``options.traceback``."""
        tag = _tag(message)
        try:
            self.known_tags.remove(tag)
        except KeyError:  # a tag from before a reconnect: RabbitMQ redelivers it anyway
            log.warning("could not dead-letter a message: its delivery tag is stale")
            return
        body = with_reason(message, failure_reason(message))
        try:
            self.connection.add_callback_threadsafe(partial(self._dead_letter, tag, body))
        except _CHANNEL_ERRORS as exc:
            raise _closed(exc) from None

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Nothing to do: RabbitMQ redelivers what a closed connection held."""

    def close(self) -> None:
        try:
            # Closing does not wait for the callbacks asked for (acks, dead letters):
            # one more, waited for, runs after them (pika runs them in order).
            done = threading.Event()
            self.connection.add_callback_threadsafe(done.set)
            while not done.is_set():
                self.connection.sleep(0)
        except pika.exceptions.ConnectionWrongStateError:
            pass  # already closed or closing (a server shutdown): nothing will run
        except Exception:
            log.warning("could not wait for the consumer's callbacks", exc_info=True)
        try:
            self.channel.close()
            self.connection.close()
        except (AssertionError, *_CHANNEL_ERRORS) as exc:
            raise _closed(exc) from None

    def _dead_letter(self, tag: int, body: bytes) -> None:
        self.channel.basic_publish("", xq_name(self.queue_name), body, properties=_PERSISTENT)
        self.channel.basic_ack(tag)


def _tag(message: MessageProxy) -> int:
    if not isinstance(message, RabbitmqDelivery):
        raise TypeError(f"not a delivery of this consumer: {type(message).__name__}")
    return message.tag


def _closed(exc: BaseException) -> ConnectionClosed:
    return ConnectionClosed(exc)  # type: ignore[no-untyped-call]
