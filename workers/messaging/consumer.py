"""Dramatiq's Redis consumer, admitting only envelopes Dramatiq can route.

Dramatiq's own ``__next__`` pops a body, decodes it and hands it to the worker: a body
that does not decode crashes and restarts the consumer (stranding what it had
prefetched), and a body that decodes into the wrong shapes is routed anyway and breaks
a worker thread (workers/messaging/envelope.py lists how). Here every fetched batch is
judged first; what fails is dead-lettered with its reason, acknowledged, and logged
once; the rest is handed on exactly as Dramatiq would.

The batch check includes one Redis round trip: ``options.redis_message_id`` must name
the key the body is stored under, or the message could never be acknowledged (it would
stay in the queue's hash and the worker's acks set, and run again after every restart).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import redis
from dramatiq.broker import MessageProxy
from dramatiq.brokers.redis import _RedisConsumer
from dramatiq.common import compute_backoff
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message
from dramatiq.middleware import SkipMessage

from workers.logging import get_logger
from workers.messaging.envelope import Verdict, inspect
from workers.messaging.failure_policy import stored_reason

if TYPE_CHECKING:
    from workers.messaging.broker import SafeRedisBroker

log = get_logger("emotionviz.consumer")


class AdmittingConsumer(_RedisConsumer):
    broker: SafeRedisBroker
    message_cache: list[Any]  # admitted Messages (Dramatiq's holds raw bodies)

    def __next__(self) -> MessageProxy | None:
        try:
            if not self.message_cache:
                fetched: list[bytes | None] = []
                if self.outstanding_message_count < self.prefetch:
                    wanted = self.prefetch - self.outstanding_message_count
                    fetched = self.broker.do_fetch(self.queue_name, wanted)
                if not fetched:
                    # Nothing to do: poll again with Dramatiq's growing backoff.
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    time.sleep(backoff_ms / 1000)
                    return None
                self.misses = 0
                self.message_cache = self._admit(fetched)
                if not self.message_cache:
                    return None  # all rejected: let the consumer thread look around
            message = self.message_cache.pop(0)
            self.queued_message_ids.add(message.message_id)
            return MessageProxy(message)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None

    def _admit(self, bodies: list[bytes | None]) -> list[Message[Any]]:
        actor_queues = {name: actor.queue_name for name, actor in self.broker.actors.items()}
        verdicts = [
            inspect(
                body,
                queue=self.queue_name,
                actor_queues=actor_queues,
                max_bytes=self.broker.max_message_bytes,
            )
            for body in bodies
        ]
        verdicts = self._check_keys(bodies, verdicts)
        rejected = [
            (body, v.problem or "")
            for body, v in zip(bodies, verdicts, strict=True)
            if not v.admitted
        ]
        if rejected:
            self.broker.dead_letter_rejected(self.queue_name, rejected)
        admitted: list[Message[Any]] = []
        for verdict in verdicts:
            if verdict.fields is not None:
                admitted.append(Message(**verdict.fields))
        return admitted

    def _check_keys(self, bodies: list[bytes | None], verdicts: list[Verdict]) -> list[Verdict]:
        """Reject the admitted bodies that are not stored under the key they claim."""
        claimed = [
            (i, v.fields["options"]["redis_message_id"])
            for i, v in enumerate(verdicts)
            if v.fields is not None
        ]
        if not claimed:
            return verdicts
        stored = self.broker.stored_bodies(self.queue_name, [key for _, key in claimed])
        checked = list(verdicts)
        for (index, _), body in zip(claimed, stored, strict=True):
            if body != bodies[index]:
                checked[index] = Verdict(
                    None,
                    "options.redis_message_id does not name the key the message is stored under",
                )
        return checked

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter a failed message with its reason (scrubbed, one line) in
        ``options.traceback``, where Dramatiq keeps one and ``dlq list`` reads it."""
        try:
            self.broker.restate(self.queue_name, message, failure_reason(message))
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None  # Dramatiq retries the nack
        except Exception:  # the reason is a courtesy; the nack is not
            log.warning("could not keep the failure reason with the dead letter", exc_info=True)
        super().nack(message)


def failure_reason(message: MessageProxy) -> str:
    """Why a message is being dead-lettered, in one scrubbed line (both brokers)."""
    exc = message._exception
    if exc is None:
        return "failed without an error: a middleware gave up on it"
    if isinstance(exc, SkipMessage):
        return "skipped: older than MESSAGE_MAX_AGE_MS"  # AgeLimit, our one skipper
    return stored_reason(exc)
