"""What RabbitMQ holds right now, as far as AMQP can tell: per queue the messages
ready, delayed (``<queue>.DQ``) and dead (``<queue>.XQ``), and the consumers.

A passive ``queue_declare`` answers with a queue's ready count and consumer count,
nothing more: messages a worker holds unacknowledged (in flight, or waiting out a
retry delay in its memory), their retry counts, the age of the oldest ready message
and which worker holds what are only in RabbitMQ's management API, which this does
not use. Those are reported as not measured (``NOT_MEASURED``), never as 0.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pika.exceptions

from domain.errors import BrokerUnavailableError
from domain.messages import QUEUES
from workers.messaging.broker_state import BrokerState, QueueState

NOT_MEASURED = ("in_flight", "retrying", "oldest_age_s", "workers")
_TIMEOUT_S = 5


@contextmanager
def _quiet_pika() -> Iterator[None]:
    """pika logs a refused connection as eight error lines; the caller reports it in
    one (the CLI contract), so pika is silenced for the length of a read."""
    logger = logging.getLogger("pika")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _counts(
    channel: pika.adapters.blocking_connection.BlockingChannel, name: str
) -> tuple[int, int]:
    declared = channel.queue_declare(name, passive=True)
    return int(declared.method.message_count), int(declared.method.consumer_count)


def quick_parameters(url: str, timeout_s: float = _TIMEOUT_S) -> list[pika.URLParameters]:
    """pika's parameters for each server of ``url`` (several: ``url1;url2``, tried in
    order), each tried once with ``timeout_s``: a read that fails says so soon."""
    found = []
    for one in url.split(";"):
        params = pika.URLParameters(one.strip())
        params.connection_attempts, params.socket_timeout = 1, timeout_s
        params.blocked_connection_timeout = timeout_s
        found.append(params)
    return found


def read_rabbitmq_state(url: str, queues: tuple[str, ...] = QUEUES) -> BrokerState:
    states = {queue: QueueState(consumers=0) for queue in queues}
    try:
        with _quiet_pika(), pika.BlockingConnection(quick_parameters(url)) as connection:
            channel = connection.channel()
            for queue, state in states.items():
                for name, field in (
                    (queue, "ready"),
                    (f"{queue}.DQ", "delayed"),
                    (f"{queue}.XQ", "dead"),
                ):
                    try:
                        count, consumers = _counts(channel, name)
                    except pika.exceptions.ChannelClosedByBroker as exc:
                        if exc.reply_code != 404:
                            raise
                        channel = connection.channel()  # not declared yet: nothing there
                        continue
                    setattr(state, field, count)
                    if field == "ready":
                        state.consumers = consumers
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailableError(
            f"RabbitMQ did not answer: {type(exc).__name__} {exc}"[:300]
        ) from exc
    return BrokerState(states, [], broker="rabbitmq", not_measured=NOT_MEASURED)


def purge_dead_letters(url: str, queue: str) -> int:
    """Delete every message of ``<queue>.XQ``; how many there were (0: no such queue)."""
    try:
        with _quiet_pika(), pika.BlockingConnection(quick_parameters(url)) as connection:
            try:
                purged = connection.channel().queue_purge(f"{queue}.XQ")
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return 0
                raise
            return int(purged.method.message_count)
    except pika.exceptions.AMQPError as exc:
        raise BrokerUnavailableError(
            f"RabbitMQ did not answer: {type(exc).__name__} {exc}"[:300]
        ) from exc
