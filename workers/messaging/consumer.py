"""Dramatiq's Redis consumer, admitting only envelopes Dramatiq can route.

Dramatiq's own ``__next__`` pops a body, decodes it and hands it to the worker: a body
that does not decode crashes and restarts the consumer (stranding what it had
prefetched), and a body that decodes into the wrong shapes is routed anyway and breaks
a worker thread (workers/messaging/envelope.py lists how). Here every fetched batch is
judged first; what fails is dead-lettered with its reason, acknowledged, and logged
once; the rest is handed on exactly as Dramatiq would.

The batch check: ``options.redis_message_id`` must name the key the body is stored
under, or the message could never be acknowledged (it would stay in the queue's hash and
the worker's acks set, and run again after every restart). The fetch says which key each
body came from (redis_keys.RedisCommands.ack_and_fetch); when it cannot, the bodies
stored under the claimed keys are read again (one more round trip).

Acknowledgements go out with the next fetch: a worker thread that finished a message
hands its id to the consumer (no Redis round trip on that thread), and the consumer
thread sends the acks and its fetch together, or alone when it cannot fetch (one
round trip for both instead of one each: ~0.2 ms of CPU per message). Delivery stays
at least once: a worker that dies before its acks went out has them run again (the
handlers are idempotent: a finished entry is a no-op). An ack waits at most until the
consumer's next look at its queue (an idle one is woken by it), and ``close`` sends
what is left.

An idle consumer waits on its queue's wake-up (workers/messaging/wake_ups.py) with
Dramatiq's growing backoff as the timeout, so an announced message is fetched at once
and an unannounced one within the backoff (at most the worker timeout, 1 s). A consumer
of a delay queue also stops waiting when the earliest message it holds falls due, so a
retry runs on time rather than up to a backoff late.

A paused queue (``emotionviz queue pause``; workers/messaging/pauses.py) gives nothing:
the fetch itself looks at the paused queues' mirror in Redis (redis_keys.py), so a
pause holds from every worker's next fetch, with no database query per fetch. The
consumer then idles as on an empty queue (at most the backoff, 1 s), so a resume is
seen within a second (at once when the resume's wake-up arrives). Messages a worker
fetched before the pause landed run to their end: they were taken already, and
handing them back would only move them to the head of a queue nobody takes from.
When the mirror is missing (a Redis restarted without persistence, or flushed), the
fetch takes nothing and the consumer rebuilds the mirror from PostgreSQL first, at
most once a second (``restore_pauses``): a pause is never forgotten, even for a
moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import redis
from dramatiq.broker import Consumer, MessageProxy
from dramatiq.common import compute_backoff, current_millis
from dramatiq.errors import ConnectionClosed
from dramatiq.message import Message

from workers.logging import get_logger
from workers.messaging.delivery import Delivery, failure_reason, with_reason
from workers.messaging.envelope import Verdict, inspect
from workers.messaging.redis_keys import Fetched, RedisCommands
from workers.messaging.wake_ups import WakeUps

log = get_logger("emotionviz.consumer")


class AdmittingBroker(Protocol):
    """What the consumer needs of its broker (workers/messaging/broker.py:
    SafeRedisBroker), named here so that this module does not import that one."""

    max_message_bytes: int

    def wake_ups(self) -> WakeUps | None: ...
    def announce(self, queue_names: list[str]) -> None: ...
    def actor_queues(self) -> Mapping[str, str]: ...
    def stored_bodies(self, queue_name: str, redis_ids: list[str]) -> list[bytes | None]: ...
    def restate(self, queue_name: str, redis_id: str, body: bytes) -> None: ...
    def dead_letter_rejected(
        self, queue_name: str, rejected: list[tuple[bytes | None, str]]
    ) -> None: ...
    def restore_pauses(self) -> bool: ...


class AdmittingConsumer(Consumer):
    """A consumer of one Redis queue (``RedisBroker.consume`` returns it), written on
    Dramatiq's public ``Consumer``; the storage commands are Dramatiq's own
    (redis_keys.RedisCommands), as its consumer uses them."""

    def __init__(
        self,
        broker: AdmittingBroker,
        commands: RedisCommands,
        prefetch: int,
        timeout: int,
    ) -> None:
        self.broker = broker
        self.commands = commands
        self.queue_name = queue_name = commands.queue_name
        self.prefetch = prefetch
        self.timeout = timeout
        self.message_cache: list[Message[Any]] = []  # admitted, not yet handed on
        self.queued_message_ids: set[str] = set()  # handed on, not yet (n)acked
        self.misses = 0
        wake_ups = broker.wake_ups()
        # Set by a wake-up for this queue; without wake-ups, never (a plain sleep).
        self.woken = wake_ups.register(queue_name) if wake_ups else threading.Event()
        self.due: dict[str, int] = {}  # message id -> eta (ms) of the delayed ones held
        # Redis ids acknowledged by worker threads, sent with the next fetch; after
        # close, an ack goes out at once.
        self._acks: list[str] = []
        self._acks_lock = threading.Lock()
        self._closed = False
        self.paused = False  # the last fetch found the queue paused
        self._restored_at = 0.0  # monotonic time of the last mirror rebuild attempt

    @property
    def outstanding_message_count(self) -> int:
        return len(self.queued_message_ids) + len(self.message_cache)

    def __next__(self) -> MessageProxy | None:
        try:
            if not self.message_cache:
                fetched: list[bytes | None] = []
                acks = self._take_acks()
                can_fetch = self.outstanding_message_count < self.prefetch
                if can_fetch:
                    # Cleared before the fetch: a wake-up sent after it is not lost.
                    self.woken.clear()
                    fetched, keys, state = self._ack_and_fetch(
                        acks, self.prefetch - self.outstanding_message_count
                    )
                    self._note_state(state)
                elif acks:
                    self._ack_and_fetch(acks, 0)
                if not fetched:
                    # Nothing to do: wait for a wake-up, at most Dramatiq's growing backoff.
                    self.misses, backoff_ms = compute_backoff(self.misses, max_backoff=self.timeout)
                    self._idle(backoff_ms / 1000, wakeable=can_fetch)
                    return None
                self.misses = 0
                self.message_cache = self._admit(fetched, keys)
                if not self.message_cache:
                    return None  # all rejected: let the consumer thread look around
            message = self.message_cache.pop(0)
            self.queued_message_ids.add(message.message_id)
            eta = message.options.get("eta")
            if isinstance(eta, int | float):
                self.due[message.message_id] = int(eta)
            return Delivery(message)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None

    def _note_state(self, state: str) -> None:
        if state == "unmirrored":
            now = time.monotonic()
            if now - self._restored_at >= 1.0:
                self._restored_at = now
                self.broker.restore_pauses()
            return
        paused = state == "paused"
        if paused != self.paused:
            self.paused = paused
            log.info(
                "queue paused: taking no message" if paused else "queue resumed",
                queue=self.queue_name,
            )

    def _idle(self, seconds: float, *, wakeable: bool) -> None:
        if self.due:  # the consumer thread moves a delayed message only between waits
            seconds = min(seconds, max(0.0, (min(self.due.values()) - current_millis()) / 1000))
        if not wakeable:
            # Every prefetch slot is taken: a new message could not be fetched anyway.
            time.sleep(seconds)
            return
        wake_ups = self.broker.wake_ups()
        if wake_ups is not None:
            wake_ups.ensure_running()
        self.woken.wait(seconds)

    def ack(self, message: MessageProxy) -> None:
        """Hand the message's id to the consumer thread, which sends it with its next
        fetch (the queue consumed, not message.queue_name: a delayed message is acked
        on the delay queue it was taken from); at once after ``close``."""
        self.due.pop(message.message_id, None)
        redis_id = message.options["redis_message_id"]
        with self._acks_lock:
            deferred = not self._closed
            if deferred:
                self._acks.append(redis_id)
        try:
            if not deferred:
                self.commands.ack(redis_id)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None
        finally:
            self.queued_message_ids.discard(message.message_id)
        if deferred:
            self.woken.set()  # an idle consumer sends it now, not after its backoff

    def _take_acks(self) -> list[str]:
        with self._acks_lock:
            acks, self._acks = self._acks, []
        return acks

    def _ack_and_fetch(self, acks: list[str], count: int) -> Fetched:
        try:
            return self.commands.ack_and_fetch(acks, count)
        except redis.RedisError:
            with self._acks_lock:  # sent again next time (an ack is idempotent)
                self._acks[:0] = acks
            raise

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter a failed message with its reason (scrubbed, one line) in
        ``options.traceback``, where Dramatiq keeps one and ``dlq list`` reads it."""
        redis_id = message.options["redis_message_id"]
        try:
            self.broker.restate(
                self.queue_name, redis_id, with_reason(message, failure_reason(message))
            )
        except redis.ConnectionError as error:
            raise ConnectionClosed(error) from None  # Dramatiq retries the nack
        except Exception:  # the reason is a courtesy; the nack is not
            log.warning("could not keep the failure reason with the dead letter", exc_info=True)
        self.due.pop(message.message_id, None)
        try:
            self.commands.nack(redis_id)
        except redis.ConnectionError as exc:
            raise ConnectionClosed(exc) from None
        finally:
            self.queued_message_ids.discard(message.message_id)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Give prefetched messages back (shutdown, lost connection), announced so that
        another worker's idle consumer takes them at once."""
        redis_ids = [message.options["redis_message_id"] for message in messages]
        if not redis_ids:
            return
        self.commands.requeue(redis_ids)
        self.broker.announce([self.queue_name])

    def close(self) -> None:
        with self._acks_lock:
            self._closed = True
            acks, self._acks = self._acks, []
        if acks:
            try:
                self.commands.ack_and_fetch(acks, 0)
            except redis.RedisError as exc:
                log.warning(
                    "acknowledgements not sent; their messages run again (a no-op for "
                    "finished work) once this worker's acks are given back",
                    acks=len(acks),
                    reason=type(exc).__name__,
                )
        wake_ups = self.broker.wake_ups()
        if wake_ups is not None:
            wake_ups.unregister(self.queue_name, self.woken)

    def _admit(self, bodies: list[bytes | None], keys: list[bytes] | None) -> list[Message[Any]]:
        actor_queues = self.broker.actor_queues()
        verdicts = [
            inspect(
                body,
                queue=self.queue_name,
                actor_queues=actor_queues,
                max_bytes=self.broker.max_message_bytes,
            )
            for body in bodies
        ]
        verdicts = self._check_keys(bodies, verdicts, keys)
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

    def _check_keys(
        self, bodies: list[bytes | None], verdicts: list[Verdict], keys: list[bytes] | None
    ) -> list[Verdict]:
        """Reject the admitted bodies that are not stored under the key they claim: the
        key each body was fetched from when the fetch said (the usual case), else the
        bodies stored under the claimed keys, read again."""
        claimed = [
            (i, v.fields["options"]["redis_message_id"])
            for i, v in enumerate(verdicts)
            if v.fields is not None
        ]
        if not claimed:
            return verdicts
        checked = list(verdicts)
        if keys is not None and len(keys) == len(bodies):
            for index, key in claimed:
                if keys[index] != key.encode():
                    checked[index] = Verdict(
                        None,
                        "options.redis_message_id does not name the key the message is "
                        "stored under",
                    )
            return checked
        stored = self.broker.stored_bodies(self.queue_name, [key for _, key in claimed])
        for (index, _), body in zip(claimed, stored, strict=True):
            if body != bodies[index]:
                checked[index] = Verdict(
                    None,
                    "options.redis_message_id does not name the key the message is stored under",
                )
        return checked
