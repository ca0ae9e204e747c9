"""The queues we declare on RabbitMQ: each actor queue, its delay queue ``<queue>.DQ``
and its dead-letter queue ``<queue>.XQ``, classic or quorum (RABBITMQ_QUEUE_TYPE).

Dramatiq declares no queue type, and RabbitMQ (3.x) refuses a declaration whose
``x-queue-type`` differs from the existing queue's, including none against quorum: so
with quorum queues every declaration, Dramatiq's included, must carry the type. Our
broker declares the three queues itself (``SafeRabbitmqBroker.declare_queue``), with
Dramatiq's arguments; classic ones exactly as Dramatiq does (no type), so queues an
earlier version declared compare equal (tests/contract/test_dramatiq.py checks it).

A queue's type cannot change in place: a queue that exists with the other type stops
the process with ``ConfigurationError`` saying how to migrate.
"""

from __future__ import annotations

from typing import Any, Literal

import pika.exceptions
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import dq_name, xq_name
from pika.adapters.blocking_connection import BlockingChannel

from domain.errors import ConfigurationError

QueueType = Literal["classic", "quorum"]


def _typed(arguments: dict[str, Any], queue_type: QueueType) -> dict[str, Any]:
    return {**arguments, "x-queue-type": "quorum"} if queue_type == "quorum" else arguments


def queue_arguments(canonical: str, queue_type: QueueType) -> dict[str, Any]:
    """A queue's and its delay queue's arguments: what fails there goes to ``.XQ``.
    (No ``x-max-priority``: we never set Dramatiq's ``max_priority``, and quorum
    queues on RabbitMQ 3.x have no priorities.)"""
    return _typed(
        {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(canonical)},
        queue_type,
    )


def dead_letter_arguments(queue_type: QueueType) -> dict[str, Any]:
    """``.XQ``'s: dead letters expire after Dramatiq's ``DEAD_MESSAGE_TTL`` (7 days)."""
    return _typed({"x-message-ttl": DEAD_MESSAGE_TTL}, queue_type)


def declarations(canonical: str, queue_type: QueueType) -> list[tuple[str, dict[str, Any]]]:
    """(name, arguments) of the three queues of ``canonical``, all durable."""
    return [
        (canonical, queue_arguments(canonical, queue_type)),
        (dq_name(canonical), queue_arguments(canonical, queue_type)),
        (xq_name(canonical), dead_letter_arguments(queue_type)),
    ]


def declare_queues(channel: BlockingChannel, canonical: str, queue_type: QueueType) -> None:
    """Declare ``canonical``'s three queues (a no-op for those that exist alike).

    Raises ConfigurationError when one exists with another type (or other arguments),
    pika's errors otherwise (the channel is closed then)."""
    for name, arguments in declarations(canonical, queue_type):
        try:
            channel.queue_declare(name, durable=True, arguments=arguments)
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 406:  # PRECONDITION_FAILED: it exists, declared otherwise
                raise
            if "x-queue-type" in str(exc.reply_text):
                raise ConfigurationError(conflict_message(name, queue_type)) from None
            raise ConfigurationError(
                f"RabbitMQ queue {name!r} exists with other arguments than ours "
                f"({str(exc.reply_text)[:200]}): it was not declared by this project"
            ) from None


def conflict_message(name: str, queue_type: QueueType) -> str:
    other = "classic" if queue_type == "quorum" else "quorum (or another type)"
    return (
        f"RabbitMQ queue {name!r} exists as a {other} queue but RABBITMQ_QUEUE_TYPE="
        f"{queue_type}: a queue's type cannot change in place; move to a new vhost, or "
        "drain and delete the queues (docs/operations.md, 'Running on RabbitMQ')"
    )
