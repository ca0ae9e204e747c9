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
from typing import TYPE_CHECKING, Any

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


class RedisCommands:
    """The storage commands of a ``RedisBroker`` for one queue (as consumed: a delay
    queue's name ends in ``.DQ``). Each is one round trip of Dramatiq's Lua script,
    which also heart-beats for this broker and, now and then, requeues the messages
    of dead workers."""

    def __init__(self, broker: RedisBroker, queue_name: str) -> None:
        self.queue_name = queue_name
        self._fetch = broker.do_fetch
        self._ack = broker.do_ack
        self._nack = broker.do_nack
        self._requeue = broker.do_requeue

    def fetch(self, count: int) -> list[bytes | None]:
        """Up to ``count`` bodies, moved to this broker's acks set."""
        fetched: Any = self._fetch(self.queue_name, count)
        return list(fetched)

    def ack(self, redis_id: str) -> None:
        self._ack(self.queue_name, redis_id)

    def nack(self, redis_id: str) -> None:
        """Move the stored body to the queue's dead letters."""
        self._nack(self.queue_name, redis_id)

    def requeue(self, redis_ids: list[str]) -> None:
        """Push held messages back onto the queue (shutdown, lost connection)."""
        if redis_ids:
            self._requeue(self.queue_name, *redis_ids)
