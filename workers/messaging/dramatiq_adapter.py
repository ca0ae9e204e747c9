"""The part of Dramatiq we use that its documentation does not promise and that is not
its Redis storage (which redis_keys.py adapts: key layout and storage commands).

Everything else in workers/messaging/ stands on Dramatiq's public seams: ``Broker``'s
methods (``consume``, ``enqueue``, ``emit_before``/``emit_after``), ``Consumer`` and
``MessageProxy`` as base classes, ``Message``'s API, ``Encoder``, middleware hooks.
tests/contract/test_dramatiq.py fails loudly when an upgrade changes what is left here
(scripts/upgrade_check runs it on the newest release), and docs/architecture.md
("Private names of dependencies") says what upstream change would make it public.

- ``redeclare_on_consume``: marks a RabbitMQ queue that went away so that the
  broker's next ``consume`` declares it again (``RabbitmqBroker.queues_pending``), as
  Dramatiq's own RabbitMQ consumer does on a 404.
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
