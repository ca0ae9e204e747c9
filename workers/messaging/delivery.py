"""What our consumers hand to Dramatiq's worker, and what a dead letter says about it.

``Delivery`` is a ``dramatiq.MessageProxy`` (the public base class of what
``Broker.consume`` yields) that keeps the error Dramatiq's worker stuffs into it
(``stuff_exception``, public), so a nack can say why without reading the proxy's
private ``_exception``. Both brokers use these (consumer.py, rabbitmq.py).
"""

from __future__ import annotations

import json
from typing import Any

from dramatiq.broker import MessageProxy
from dramatiq.message import Message
from dramatiq.middleware import SkipMessage

from domain.redaction import redact
from workers.messaging.failure_policy import stored_reason


class Delivery(MessageProxy):
    """A message taken from a queue, with the error it failed with (if any)."""

    def __init__(self, message: Message[Any]) -> None:
        super().__init__(message)
        self.error: BaseException | None = None

    def stuff_exception(self, exception: BaseException) -> None:
        super().stuff_exception(exception)
        self.error = exception

    def clear_exception(self) -> None:
        super().clear_exception()
        self.error = None


class RabbitmqDelivery(Delivery):
    """A RabbitMQ delivery: acknowledged by its delivery tag."""

    def __init__(self, message: Message[Any], *, tag: int, redelivered: bool) -> None:
        super().__init__(message)
        self.tag = tag
        self.redelivered = redelivered


def failure_reason(message: MessageProxy) -> str:
    """Why a message is being dead-lettered, in one scrubbed line (both brokers)."""
    exc = message.error if isinstance(message, Delivery) else None
    if exc is None:
        return "failed without an error: a middleware gave up on it"
    if isinstance(exc, SkipMessage):
        return "skipped: older than MESSAGE_MAX_AGE_MS"  # AgeLimit, our one skipper
    return stored_reason(exc)


def with_reason(message: MessageProxy, reason: str) -> bytes:
    """The message's envelope with ``reason`` as ``options.traceback``, where Dramatiq
    keeps one and ``dlq list`` reads it (MessageProxy forwards ``copy`` to the
    Message it wraps)."""
    body: bytes = message.copy(options={"traceback": reason}).encode()
    return body


_KEPT_BODY_CHARS = 4096


def dead_letter_record(body: bytes, reason: str, max_bytes: int) -> bytes:
    """What the dead letters keep of a refused body: the reason, its size, and the body
    as redacted text (only its start when it was over MAX_MESSAGE_BYTES)."""
    text = body.decode("utf-8", errors="replace")
    if len(body) > max_bytes:
        text = text[:_KEPT_BODY_CHARS]
    record = {"rejected": {"reason": reason, "bytes": len(body)}, "body": redact(text)}
    return json.dumps(record).encode()
