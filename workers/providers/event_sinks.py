"""Where completion events go (docs/messages.md, "Completion events"): an HTTP webhook
signed per the Standard Webhooks convention, and a Dramatiq queue for Python services.

Each sink sends one event and returns, or raises EventDeliveryError with a reason that
is safe to store and show (no secret, no response body). Retries, backoff and dead
letters are the outbox's (workers/services/events.py), not the sinks'.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import dramatiq
import redis

from domain.errors import TransientError
from workers.settings import webhook_target

# A receiver's answer is read (so the connection can be kept) up to this much.
MAX_RESPONSE_BYTES = 64 * 1024
USER_AGENT = "emotionviz-events/1"


class EventDeliveryError(TransientError):
    """A subscriber did not take an event (the outbox retries it, then dead-letters it)."""


@dataclass(frozen=True)
class Event:
    """One completion event as subscribers receive it."""

    id: uuid.UUID
    type: str  # visualization.completed | visualization.failed | intake.completed
    created_at: datetime
    data: dict[str, Any]  # exactly the NOTIFY payload

    def document(self) -> dict[str, Any]:
        return {
            "version": 1,
            "id": str(self.id),
            "type": self.type,
            "timestamp": self.created_at.isoformat(),
            "data": self.data,
        }

    def body(self) -> bytes:
        return json.dumps(self.document(), separators=(",", ":"), sort_keys=True).encode()


class EventSink(Protocol):
    name: str  # the subscriber's name in event_deliveries

    def deliver(self, event: Event) -> None: ...

    def close(self) -> None: ...


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` and the base64 HMAC-SHA256 of
    ``{id}.{timestamp}.{body}`` (Standard Webhooks)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSink:
    """POST each event to one URL on a kept-alive connection (one per dispatcher: a
    sink is used by one thread). Any 2xx is taken; anything else, a timeout or a refused
    connection is an EventDeliveryError."""

    name = "webhook"

    def __init__(self, url: str, key: bytes, timeout_s: float) -> None:
        # The port always given: http.client would read an IPv6 literal's last group
        # as one; the path (perhaps a token) never goes into a reason.
        self._target = webhook_target(url)
        self._key = key
        self._timeout_s = timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def deliver(self, event: Event) -> None:
        body = event.body()
        timestamp = int(time.time())  # signed at each attempt, as the convention asks
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": str(event.id),
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, str(event.id), timestamp, body),
        }
        reused = self._connection is not None
        try:
            status, reason = self._post(body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                self.close()
                raise EventDeliveryError("webhook closed the connection") from None
            # The receiver closed the idle kept-alive connection: once more, on a new one.
            self.close()
            status, reason = self._send_fresh(body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise EventDeliveryError(f"webhook unreachable: {_describe(exc)}") from None
        if not 200 <= status < 300:
            raise EventDeliveryError(f"webhook answered {status} {reason}"[:200])

    def _send_fresh(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        try:
            return self._post(body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise EventDeliveryError(f"webhook unreachable: {_describe(exc)}") from None

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        if self._connection is None:
            target = self._target
            kind = http.client.HTTPSConnection if target.https else http.client.HTTPConnection
            self._connection = kind(target.host, target.port, timeout=self._timeout_s)
        self._connection.request("POST", self._target.path, body=body, headers=headers)
        response = self._connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        if not response.isclosed():  # an answer longer than we read: start afresh
            self.close()
        return response.status, response.reason

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class QueueSink:
    """Enqueue each event on a Dramatiq queue, as a message to ``actor_name`` whose one
    argument is the event's document; the message id is the event's id."""

    name = "queue"

    def __init__(self, broker: dramatiq.Broker, queue_name: str, actor_name: str) -> None:
        self._broker = broker
        self._queue_name = queue_name
        self._actor_name = actor_name

    def deliver(self, event: Event) -> None:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=self._queue_name,
            actor_name=self._actor_name,
            args=(event.document(),),
            kwargs={},
            options={},
            message_id=str(event.id),
            message_timestamp=int(time.time() * 1000),
        )
        try:
            self._broker.enqueue(message)
        except (dramatiq.errors.DramatiqError, redis.RedisError, OSError) as exc:
            raise EventDeliveryError(f"queue {self._queue_name}: {_describe(exc)}") from None

    def close(self) -> None:
        pass


def _describe(exc: BaseException) -> str:
    if isinstance(exc, http.client.InvalidURL):  # its text quotes the URL
        return type(exc).__name__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:150]}" if text else type(exc).__name__
