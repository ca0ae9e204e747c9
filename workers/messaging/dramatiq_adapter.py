"""The parts of Dramatiq we use that its documentation does not promise, in one place.

Everything else in workers/messaging/ stands on Dramatiq's public seams: ``Broker``'s
methods (``consume``, ``enqueue``, ``emit_before``/``emit_after``), ``Consumer`` and
``MessageProxy`` as base classes, ``Message``'s API, ``Encoder``, middleware hooks.
What is left has no public seam; tests/contract/test_dramatiq.py fails loudly when an
upgrade changes it (scripts/upgrade_check runs it on the newest release), and
docs/architecture.md ("Private names of dependencies") says what upstream change would
make each public.

- ``RedisCommands``: the Redis broker's storage commands (fetch, ack, nack, requeue),
  which ``RedisBroker`` makes up by name from its Lua dispatch script
  (``broker.do_<command>``); Dramatiq's own Redis consumer calls them the same way.
- ``redeclare_on_consume``: marks a RabbitMQ queue that went away so that the
  broker's next ``consume`` declares it again (``RabbitmqBroker.queues_pending``), as
  Dramatiq's own RabbitMQ consumer does on a 404.

Dramatiq's Redis key layout, the third, is spelled in redis_keys.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dramatiq.common import q_name

if TYPE_CHECKING:  # the RabbitMQ broker needs pika, the rabbitmq extra
    from dramatiq.brokers.rabbitmq import RabbitmqBroker
    from dramatiq.brokers.redis import RedisBroker


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


def redeclare_on_consume(broker: RabbitmqBroker, queue_name: str) -> None:
    """The queue went away (RabbitMQ said 404): the broker's next ``consume`` declares
    it (and its delay and dead-letter queues) again."""
    broker.queues_pending.add(q_name(queue_name))
