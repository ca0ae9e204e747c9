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

One of them is ours: the consumer's fetch (``ack_and_fetch``) runs
``_FETCH_UNLESS_PAUSED``, Dramatiq's fetch (heartbeat, LPOP into the worker's acks set,
HMGET) preceded by a look at the paused queues' mirror (``{ns}:__paused__``,
workers/messaging/pauses.py) in the same script: a paused queue gives nothing, at the
next fetch of every worker, with no extra round trip. Dramatiq's maintenance (dead
workers' messages back to their queues) still runs, by its own script, as often as
Dramatiq runs it on a fetch.
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


def paused(namespace: str) -> str:
    """The paused queues' mirror: a hash, queue -> since (workers/messaging/pauses.py)."""
    return f"{namespace}:__paused__"


def heartbeats(namespace: str) -> str:
    return f"{namespace}:__heartbeats__"


def acks_pattern(namespace: str) -> str:
    """A SCAN pattern matching every worker's acks set."""
    return f"{namespace}:__acks__.*"


class Fetched(NamedTuple):
    bodies: list[bytes | None]
    keys: list[bytes] | None  # the key each body is stored under (None: not known)
    # "ok"; "paused": the queue is paused (nothing fetched); "unmirrored": the paused
    # queues' mirror is missing (a flushed or restarted Redis), nothing fetched
    state: str = "ok"


# Dramatiq's fetch (dispatch.lua, command "fetch") behind the paused queues' mirror.
# KEYS: paused mirror, heartbeats, ready list, ready bodies, this worker's acks set.
# ARGV: canonical queue, count, timestamp (ms), worker id, strict ("1": a missing
# mirror fetches nothing, the consumer rebuilds it from PostgreSQL first).
_FETCH_UNLESS_PAUSED = """
redis.call("zadd", KEYS[2], ARGV[3], ARGV[4])
if ARGV[5] == "1" and redis.call("exists", KEYS[1]) == 0 then
    return {"unmirrored"}
end
if redis.call("hexists", KEYS[1], ARGV[1]) == 1 then
    return {"paused"}
end
local ids = {}
for i = 1, tonumber(ARGV[2]) do
    local id = redis.call("lpop", KEYS[3])
    if not id then
        break
    end
    ids[i] = id
    redis.call("sadd", KEYS[5], id)
end
if #ids == 0 then
    return {"ok", {}, {}}
end
return {"ok", ids, redis.call("hmget", KEYS[4], unpack(ids))}
"""


class RedisCommands:
    """The storage commands of a ``RedisBroker`` for one queue (as consumed: a delay
    queue's name ends in ``.DQ``). Each is one round trip of Dramatiq's Lua script,
    which also heart-beats for this broker and, now and then, requeues the messages
    of dead workers."""

    def __init__(
        self, broker: RedisBroker, queue_name: str, *, strict_pauses: bool = False
    ) -> None:
        self.queue_name = queue_name
        self.strict_pauses = strict_pauses
        self._broker = broker
        self._fetch_unless_paused = broker.client.register_script(_FETCH_UNLESS_PAUSED)
        self._fetch = broker.do_fetch
        self._ack = broker.do_ack
        self._nack = broker.do_nack
        self._requeue = broker.do_requeue

    def fetch(self, count: int) -> list[bytes | None]:
        """Up to ``count`` bodies, moved to this broker's acks set."""
        fetched: Any = self._fetch(self.queue_name, count)
        return list(fetched)

    def ack_and_fetch(self, redis_ids: list[str], count: int) -> Fetched:
        """``ack`` each of ``redis_ids``, then fetch up to ``count`` bodies (none if 0)
        unless the queue is paused, in one round trip: the acks are Dramatiq's script
        called as ``RedisBroker`` calls it; the fetch is ``_FETCH_UNLESS_PAUSED``, which
        also says which key each body is stored under; when Dramatiq would do
        maintenance on a fetch, its script runs a fetch of 0 first (maintenance only).
        A Redis that lost the scripts (restarted, flushed) gets the unanswered calls
        again through redis-py, which loads them."""
        broker: Any = self._broker
        commands = [self._dispatch("ack", redis_id) for redis_id in redis_ids]
        maintain = count > 0 and bool(broker._should_do_maintenance("fetch"))
        if maintain:
            commands.append(self._dispatch("fetch", 0, maintenance=True))
        if count > 0:
            count = min(count, broker._max_unpack_size())  # as Dramatiq's script bounds it
            keys, args = self._fetch_call(count)
            commands.append(("EVALSHA", self._fetch_unless_paused.sha, len(keys), *keys, *args))
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
        maintained = replies[-2] if maintain else None
        if isinstance(maintained, Exception) and not isinstance(
            maintained, redis.exceptions.NoScriptError
        ):
            raise maintained
        reply = replies[-1]
        if isinstance(reply, redis.exceptions.NoScriptError):
            keys, args = self._fetch_call(count)
            reply = self._fetch_unless_paused(keys=keys, args=args)  # loads the script
        elif isinstance(reply, Exception):
            raise reply
        state = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if state != "ok":
            return Fetched([], None, state)
        ids, bodies = reply[1], reply[2]
        return Fetched(list(bodies), list(ids))

    def _fetch_call(self, count: int) -> tuple[list[str], list[Any]]:
        broker: Any = self._broker
        namespace = broker.namespace
        keys = [
            paused(namespace),
            heartbeats(namespace),
            queue_keys(namespace, self.queue_name).ready,
            queue_keys(namespace, self.queue_name).ready_bodies,
            queue_keys(namespace, self.queue_name).acks(broker.broker_id),
        ]
        args = [
            canonical_queue(self.queue_name),
            count,
            current_millis(),
            broker.broker_id,
            "1" if self.strict_pauses else "0",
        ]
        return keys, args

    def _dispatch(
        self, command: str, argument: str | int, *, maintenance: bool | None = None
    ) -> tuple[Any, ...]:
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
            int(maintenance) if maintenance is not None else broker._should_do_maintenance(command),
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
