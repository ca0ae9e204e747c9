"""Dramatiq's Redis storage, adapted in one place: its key layout and its storage
commands. Both are private to Dramatiq's Redis broker and both are defined by one
upstream file (dramatiq/brokers/redis/dispatch.lua, the Lua script that writes the keys
and runs the commands), so an upgrade that changes one is mended here;
tests/contract/test_dramatiq.py fails loudly when it does.

The key layout. Dramatiq's Redis broker keeps, under a namespace (``REDIS_NAMESPACE``):

- ``{ns}:{queue}``: a list of message ids ready to be consumed;
- ``{ns}:{queue}.msgs``: a hash, message id -> encoded envelope;
- ``{ns}:{queue}.DQ`` (and its ``.msgs``): messages waiting out a delay or a retry
  backoff, until a worker moves them to the ready queue;
- ``{ns}:{queue}.XQ`` (a sorted set of ids by death time) and ``{ns}:{queue}.XQ.msgs``:
  dead letters, kept for ``DEAD_MESSAGE_TTL`` (7 days);
- ``{ns}:__acks__.{worker_id}.{queue}``: the ids a worker holds unacknowledged;
- ``{ns}:__heartbeats__``: a sorted set, worker id -> last heartbeat (ms).

Every product module, script and test that reads or writes them spells them through
this module.

The storage commands (``RedisCommands``): fetch, ack, nack, requeue, which
``RedisBroker`` makes up by name from the same Lua script (``broker.do_<command>``);
Dramatiq's own Redis consumer calls them the same way, ours (consumer.py) through here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import redis
from dramatiq.common import current_millis

if TYPE_CHECKING:
    from dramatiq.brokers.redis import RedisBroker

DELAY_SUFFIX = ".DQ"
DEAD_SUFFIX = ".XQ"
BODIES_SUFFIX = ".msgs"


def canonical_queue(queue_name: str) -> str:
    """The queue a delay or dead-letter queue belongs to (``visualizations.DQ`` ->
    ``visualizations``)."""
    return queue_name.removesuffix(DELAY_SUFFIX).removesuffix(DEAD_SUFFIX)


@dataclass(frozen=True)
class QueueKeys:
    namespace: str
    queue: str

    @property
    def ready(self) -> str:
        return f"{self.namespace}:{self.queue}"

    @property
    def ready_bodies(self) -> str:
        return f"{self.ready}{BODIES_SUFFIX}"

    @property
    def delayed(self) -> str:
        return f"{self.ready}{DELAY_SUFFIX}"

    @property
    def delayed_bodies(self) -> str:
        return f"{self.delayed}{BODIES_SUFFIX}"

    @property
    def dead(self) -> str:
        return f"{self.ready}{DEAD_SUFFIX}"

    @property
    def dead_bodies(self) -> str:
        return f"{self.dead}{BODIES_SUFFIX}"

    def acks(self, worker_id: str) -> str:
        """The unacknowledged ids a worker holds from this queue (the queue name as the
        consumer saw it: ``visualizations`` or ``visualizations.DQ``)."""
        return f"{self.namespace}:__acks__.{worker_id}.{self.queue}"


def queue_keys(namespace: str, queue: str) -> QueueKeys:
    return QueueKeys(namespace, queue)


def heartbeats(namespace: str) -> str:
    return f"{namespace}:__heartbeats__"


def acks_pattern(namespace: str) -> str:
    """A SCAN pattern matching every worker's acks set."""
    return f"{namespace}:__acks__.*"


class Fetched(NamedTuple):
    bodies: list[bytes | None]
    keys: list[bytes] | None  # the key each body is stored under (None: not known)


class RedisCommands:
    """The storage commands of a ``RedisBroker`` for one queue (as consumed: a delay
    queue's name ends in ``.DQ``). Each is one round trip of Dramatiq's Lua script,
    which also heart-beats for this broker and, now and then, requeues the messages
    of dead workers."""

    def __init__(self, broker: RedisBroker, queue_name: str) -> None:
        self.queue_name = queue_name
        self._broker = broker
        self._fetch = broker.do_fetch
        self._ack = broker.do_ack
        self._nack = broker.do_nack
        self._requeue = broker.do_requeue

    def fetch(self, count: int) -> list[bytes | None]:
        """Up to ``count`` bodies, moved to this broker's acks set."""
        fetched: Any = self._fetch(self.queue_name, count)
        return list(fetched)

    def ack_and_fetch(self, redis_ids: list[str], count: int) -> Fetched:
        """``ack`` each of ``redis_ids``, then ``fetch(count)`` (none if 0), in one
        round trip: the script's calls as ``RedisBroker`` makes them (same arguments,
        heartbeat and maintenance), sent together on one connection of the broker's
        pool; Redis runs them in order. The fetch runs in MULTI/EXEC after an LRANGE
        of the ids it pops, so each body comes with the key it is stored under. A
        Redis that lost the script (restarted, flushed) gets the unanswered calls
        again through Dramatiq, which loads it (the keys are then not known)."""
        broker: Any = self._broker
        commands = [self._dispatch("ack", redis_id) for redis_id in redis_ids]
        if count > 0:
            count = min(count, broker._max_unpack_size())  # as the script bounds it
            ready = queue_keys(broker.namespace, self.queue_name).ready
            commands += [
                ("MULTI",),
                ("LRANGE", ready, 0, count - 1),
                self._dispatch("fetch", count),
                ("EXEC",),
            ]
        pool = broker.client.connection_pool
        conn = pool.get_connection()
        try:
            replies = conn.retry.call_with_retry(
                lambda: _round_trip(conn, commands), lambda _error: conn.disconnect()
            )
        finally:
            pool.release(conn)
        for redis_id, reply in zip(redis_ids, replies, strict=False):
            if isinstance(reply, redis.exceptions.NoScriptError):
                self._ack(self.queue_name, redis_id)
            elif isinstance(reply, Exception):
                raise reply
        if count <= 0:
            return Fetched([], None)
        for reply in replies[len(redis_ids) : -1]:  # MULTI's OK, then QUEUED twice
            if isinstance(reply, Exception):
                raise reply
        executed = replies[-1]
        if isinstance(executed, Exception):
            raise executed
        ids, bodies = executed
        if isinstance(bodies, redis.exceptions.NoScriptError):
            return Fetched(self.fetch(count), None)
        if isinstance(bodies, Exception):
            raise bodies
        return Fetched(list(bodies), list(ids)[: len(bodies)])

    def _dispatch(self, command: str, argument: str | int) -> tuple[Any, ...]:
        """Dramatiq's dispatch script called as ``RedisBroker._dispatch`` calls it."""
        broker: Any = self._broker
        return (
            "EVALSHA",
            broker.scripts["dispatch"].sha,
            1,
            broker.namespace,
            command,
            current_millis(),
            self.queue_name,
            broker.broker_id,
            broker.heartbeat_timeout,
            broker.dead_message_ttl,
            broker._should_do_maintenance(command),
            broker._max_unpack_size(),
            argument,
        )

    def ack(self, redis_id: str) -> None:
        self._ack(self.queue_name, redis_id)

    def nack(self, redis_id: str) -> None:
        """Move the stored body to the queue's dead letters."""
        self._nack(self.queue_name, redis_id)

    def requeue(self, redis_ids: list[str]) -> None:
        """Push held messages back onto the queue (shutdown, lost connection)."""
        if redis_ids:
            self._requeue(self.queue_name, *redis_ids)


def _round_trip(conn: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` together, read each reply (an error reply is returned, not
    raised, so that every reply is read before the connection goes back to its pool)."""
    conn.send_packed_command(conn.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(conn.read_response())
        except redis.ResponseError as error:
            replies.append(error)
    return replies
