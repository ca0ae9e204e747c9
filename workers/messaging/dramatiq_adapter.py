"""The part of Dramatiq we use that its documentation does not promise and that is not
its Redis storage (which redis_keys.py adapts: key layout and storage commands).

Everything else in workers/messaging/ stands on Dramatiq's public seams: ``Broker``'s
methods (``consume``, ``enqueue``, ``emit_before``/``emit_after``), ``Consumer`` and
``MessageProxy`` as base classes, ``Message``'s API, ``Encoder``, middleware hooks.
tests/contract/test_dramatiq.py fails loudly when an upgrade changes what is left here
(scripts/upgrade_check runs it on the newest release), and docs/architecture.md
("Private names of dependencies") says what upstream change would make it public.

- ``RabbitmqBroker.queues_pending``, the queues Dramatiq has yet to declare on the
  server (or again: its enqueue adds one RabbitMQ could not route to):
  ``redeclare_on_consume`` marks a queue that went away so that the broker's next
  ``consume`` declares it again, as Dramatiq's own RabbitMQ consumer does on a 404;
  ``declaration_pending``/``declared`` let our broker declare the queues itself
  (workers/messaging/rabbitmq_queues.py: Dramatiq declares no queue type).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dramatiq.common import q_name

if TYPE_CHECKING:  # the RabbitMQ broker needs pika, the rabbitmq extra
    from dramatiq.brokers.rabbitmq import RabbitmqBroker


def redeclare_on_consume(broker: RabbitmqBroker, queue_name: str) -> None:
    """The queue went away (RabbitMQ said 404): the broker's next ``consume`` declares
    it (and its delay and dead-letter queues) again."""
    broker.queues_pending.add(q_name(queue_name))


def declaration_pending(broker: RabbitmqBroker, canonical: str) -> bool:
    """Whether ``canonical``'s queues are still to be declared on the server."""
    return canonical in broker.queues_pending


def declared(broker: RabbitmqBroker, canonical: str) -> None:
    """``canonical``'s queues are declared: Dramatiq's enqueue stops asking."""
    broker.queues_pending.discard(canonical)
