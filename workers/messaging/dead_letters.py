"""Dead letters of the Redis broker: list, replay, purge.

Dramatiq keeps a queue's dead messages for DEAD_MESSAGE_TTL (7 days): ids by time of
death, and their bodies (key names: workers/messaging/redis_keys.py). A failed message
keeps its envelope, with the reason in ``options.traceback``; a body refused before
routing is kept as ``{"rejected": {"reason", "bytes"}, "body": text}`` (not replayable).
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from workers.messaging.redis_keys import queue_keys


class DeadLetters:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def _keys(self, queue: str) -> tuple[str, str, str]:
        keys = queue_keys(self.namespace, queue)
        return keys.ready, keys.dead, keys.dead_bodies

    def entries(self, queue: str, limit: int = 50) -> list[dict[str, Any]]:
        _, xq, msgs = self._keys(queue)
        items = []
        ranked: Any = self.client.zrevrange(xq, 0, limit - 1, withscores=True)
        for redis_id, score in ranked:
            body: Any = self.client.hget(msgs, redis_id)
            data = _decode(body)
            options = data.get("options")
            options = options if isinstance(options, dict) else {}
            rejected = data.get("rejected")  # refused before routing (consumer.py)
            error: list[str] | None
            if isinstance(rejected, dict):
                error = [str(rejected.get("reason"))]
            else:
                error = (options.get("traceback") or "").strip().splitlines()[-1:] or None
            items.append(
                {
                    "redis_id": redis_id.decode(),
                    "message_id": data.get("message_id"),
                    "actor": data.get("actor_name"),
                    "args": data.get("args"),
                    "dead_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(score / 1000)),
                    "retries": options.get("retries", 0),
                    "error": error,
                }
            )
        return items

    def replay(self, queue: str, ids: list[str] | None = None) -> int:
        """Move dead messages back to the queue, their retry count reset."""
        base, xq, msgs = self._keys(queue)
        moved = 0
        members: Any = self.client.zrange(xq, 0, -1)
        for redis_id in [m.decode() for m in members]:
            body: Any = self.client.hget(msgs, redis_id)
            data = _decode(body)
            if "actor_name" not in data:
                continue  # an undecodable body cannot be replayed; 'purge' removes it
            if ids and data.get("message_id") not in ids:
                continue
            data.setdefault("options", {})["retries"] = 0
            data["options"].pop("traceback", None)
            with self.client.pipeline() as pipe:
                pipe.zrem(xq, redis_id)
                pipe.hdel(msgs, redis_id)
                pipe.hset(
                    queue_keys(self.namespace, queue).ready_bodies, redis_id, json.dumps(data)
                )
                pipe.rpush(base, redis_id)
                pipe.execute()
            moved += 1
        return moved

    def purge(self, queue: str) -> int:
        _, xq, msgs = self._keys(queue)
        count: Any = self.client.zcard(xq)
        self.client.delete(xq, msgs)
        return int(count)


def _decode(body: bytes | None) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"undecodable_body": body[:120].decode("utf-8", errors="replace")}
    return data if isinstance(data, dict) else {"undecodable_body": str(data)[:120]}
