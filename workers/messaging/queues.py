"""Queue depths as the broker's Redis keys show them (for status and benchmarks)."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from domain.messages import QUEUES
from workers.messaging.redis_keys import queue_keys


@dataclass(frozen=True)
class QueueDepth:
    ready: int
    delayed: int
    dead: int


def queue_depths(
    client: redis.Redis, namespace: str, queues: tuple[str, ...] = QUEUES
) -> dict[str, QueueDepth]:
    """Ready, delayed and dead-lettered message counts per queue, in one round trip."""
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            keys = queue_keys(namespace, queue)
            pipe.llen(keys.ready)
            pipe.llen(keys.delayed)
            pipe.zcard(keys.dead)
        counts = [int(c) for c in pipe.execute()]
    return {queue: QueueDepth(*counts[i * 3 : i * 3 + 3]) for i, queue in enumerate(queues)}


def pending_messages(client: redis.Redis, namespace: str, queue: str) -> int:
    """Messages of ``queue`` not yet acknowledged: stored bodies (ready or taken by a
    worker) plus the ready list (benchmarks wait for this to reach zero)."""
    keys = queue_keys(namespace, queue)
    return int(client.hlen(keys.ready_bodies)) + int(client.llen(keys.ready))
