"""Dramatiq's Redis key layout, spelled out once.

Dramatiq's Redis broker keeps, under a namespace (``REDIS_NAMESPACE``):

- ``{ns}:{queue}``: a list of message ids ready to be consumed;
- ``{ns}:{queue}.msgs``: a hash, message id -> encoded envelope;
- ``{ns}:{queue}.DQ`` (and its ``.msgs``): messages waiting out a delay or a retry
  backoff, until a worker moves them to the ready queue;
- ``{ns}:{queue}.XQ`` (a sorted set of ids by death time) and ``{ns}:{queue}.XQ.msgs``:
  dead letters, kept for ``DEAD_MESSAGE_TTL`` (7 days);
- ``{ns}:__acks__.{worker_id}.{queue}``: the ids a worker holds unacknowledged;
- ``{ns}:__heartbeats__``: a sorted set, worker id -> last heartbeat (ms).

These names are Dramatiq's private layout, not an API: every product module, script
and test that reads or writes them goes through this module, so a Dramatiq upgrade
that changes them is mended in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

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
