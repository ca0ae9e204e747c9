"""When the oldest message still waiting in a queue was sent: the reconciler's proof
that a backlog still holds a row's message (workers/services/reconcile.py).

Dramatiq's Redis queues are first in, first out (enqueue pushes on the right, a fetch
takes from the left), so every message sent after the head's was sent is still there,
unless it was lost. Two reads in one round trip; the head's body carries
``message_timestamp``, set when the envelope was made (a retried or requeued message
keeps its first one: older, which only makes the reconciler more careful).
"""

from __future__ import annotations

import json
import math

import redis

from workers.messaging.redis_keys import queue_keys

_HEAD_AND_BODY = """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then return false end
return redis.call('HGET', KEYS[2], head) or ''
"""


def queue_head_sent_at(client: redis.Redis, namespace: str, queue: str) -> float:
    """Epoch seconds at which the head of ``queue`` was sent; ``math.inf`` when nothing
    waits; 0.0 when the head cannot be read (a body that is not an envelope): the
    reconciler then republishes no pending row this pass rather than guess."""
    keys = queue_keys(namespace, queue)
    body = client.eval(_HEAD_AND_BODY, 2, keys.ready, keys.ready_bodies)
    if body is None:
        return math.inf
    try:
        stamp = json.loads(body).get("message_timestamp")
    except (ValueError, AttributeError):
        return 0.0
    if not isinstance(stamp, int | float) or isinstance(stamp, bool) or stamp <= 0:
        return 0.0
    return float(stamp) / 1000


def holds_messages(client: redis.Redis, namespace: str, queue: str) -> bool:
    """Whether the broker still stores any message of ``queue``: ready, in flight or
    delayed (bodies stay in their hash until acknowledged)."""
    keys = queue_keys(namespace, queue)
    with client.pipeline(transaction=False) as pipe:
        pipe.exists(keys.ready_bodies, keys.delayed_bodies)
        (found,) = pipe.execute()
    return bool(found)
