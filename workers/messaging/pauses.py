"""The paused queues' mirror in Redis (``{ns}:__paused__``, redis_keys.paused): a hash,
queue -> when it was paused (ISO 8601), plus the field ``~mirrored`` that says the
mirror was written. Every worker's fetch reads it in its own round trip
(redis_keys._FETCH_UNLESS_PAUSED); PostgreSQL's ``paused_queues`` is the truth it is
rebuilt from (workers/operations/pauses.py), whole, in one MULTI/EXEC, so a fetch
never sees half a rebuild. A missing hash means Redis lost it (no persistence, a
flush): a worker then fetches nothing until it has rebuilt it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis

from workers.messaging.redis_keys import DELAY_SUFFIX, paused
from workers.messaging.wake_ups import channel

MIRRORED = "~mirrored"  # no queue has this name (queue names are identifiers)


class PauseMirror:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.key = paused(namespace)

    def write(self, queues: Mapping[str, str]) -> None:
        """Replace the mirror with ``queues`` (queue -> since), atomically."""
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.key)
            pipe.hset(self.key, MIRRORED, "1")
            for queue, since in queues.items():
                pipe.hset(self.key, queue, since)
            pipe.execute()

    def read(self) -> dict[str, str] | None:
        """The mirrored pauses; None when the mirror is missing."""
        raw: Any = self.client.hgetall(self.key)
        if not raw:
            return None
        text = {_text(k): _text(v) for k, v in raw.items()}
        text.pop(MIRRORED, None)
        return text

    def forget(self) -> None:
        """Drop the mirror (what a Redis without persistence does on restart; tests)."""
        self.client.delete(self.key)

    def wake(self, queue: str) -> None:
        """Wake the idle consumers of ``queue`` and its delay queue (after a resume)."""
        for name in (queue, queue + DELAY_SUFFIX):
            self.client.publish(channel(self.namespace), name)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
