"""Dead letters of the Redis broker: list (with filters), show, replay, purge.

Dramatiq keeps a queue's dead messages for DEAD_MESSAGE_TTL (7 days): ids by time of
death, and their bodies (key names: workers/messaging/redis_keys.py). A failed message
keeps its envelope, with the reason in ``options.traceback``; a body refused before
routing is kept as ``{"rejected": {"reason", "bytes"}, "body": text}`` (not replayable).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from workers.messaging.redis_keys import queue_keys

ARGS_PREVIEW_CHARS = 300


@dataclass(frozen=True)
class DeadLetter:
    redis_id: str
    message_id: str | None
    actor: str | None
    args: Any
    dead_at_ms: int
    retries: int
    error: str | None  # the last line of the recorded traceback
    body: dict[str, Any]

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.dead_at_ms / 1000)

    def summary(self) -> dict[str, Any]:
        """A listing row: the arguments shortened, never the whole body."""
        args = json.dumps(self.args, default=str)
        if len(args) > ARGS_PREVIEW_CHARS:
            args = args[:ARGS_PREVIEW_CHARS] + f"... ({len(args)} chars)"
        return {
            "redis_id": self.redis_id,
            "message_id": self.message_id,
            "actor": self.actor,
            "args": args,
            "dead_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.dead_at_ms / 1000)),
            "retries": self.retries,
            "error": self.error,
        }

    def entry_ids(self) -> list[str]:
        """The entry ids an entry.created letter names (to reset their rows on retry)."""
        if self.actor != "entry.created" or not isinstance(self.args, list):
            return []
        return [
            str(arg["entry_id"])
            for arg in self.args
            if isinstance(arg, dict) and isinstance(arg.get("entry_id"), str)
        ]


class DeadLetters:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client = client
        self.namespace = namespace

    def entries(
        self,
        queue: str,
        limit: int = 50,
        *,
        actor: str | None = None,
        older_than_s: float | None = None,
        newer_than_s: float | None = None,
    ) -> list[DeadLetter]:
        """Newest first; filtered by actor and by age (seconds since death)."""
        keys = queue_keys(self.namespace, queue)
        now_ms = time.time() * 1000
        high = "+inf" if older_than_s is None else now_ms - older_than_s * 1000
        low = "-inf" if newer_than_s is None else now_ms - newer_than_s * 1000
        found: list[DeadLetter] = []
        offset, page = 0, max(limit, 100)
        while len(found) < limit:
            ranked: Any = self.client.zrevrangebyscore(
                keys.dead, high, low, start=offset, num=page, withscores=True
            )
            if not ranked:
                break
            offset += len(ranked)
            bodies: Any = self.client.hmget(keys.dead_bodies, [rid for rid, _ in ranked])
            for (redis_id, score), body in zip(ranked, bodies, strict=True):
                letter = _letter(redis_id.decode(), int(score), body)
                if actor is None or letter.actor == actor:
                    found.append(letter)
        return found[:limit]

    def get(self, queue: str, ident: str) -> DeadLetter | None:
        """One letter by its Redis id or its message id."""
        keys = queue_keys(self.namespace, queue)
        score: Any = self.client.zscore(keys.dead, ident)
        if score is not None:
            body: Any = self.client.hget(keys.dead_bodies, ident)
            return _letter(ident, int(score), body)
        for letter in self.entries(queue, limit=100_000):
            if letter.message_id == ident:
                return letter
        return None

    def replay(self, queue: str, ids: list[str] | None = None) -> list[DeadLetter]:
        """Move dead messages (all, or those with these message or Redis ids) back to
        the queue, their retry count and traceback reset. Returns what was moved."""
        keys = queue_keys(self.namespace, queue)
        moved: list[DeadLetter] = []
        for letter in self.entries(queue, limit=100_000):
            if "actor_name" not in letter.body:
                continue  # an undecodable body cannot be replayed; 'purge' removes it
            if ids and letter.message_id not in ids and letter.redis_id not in ids:
                continue
            data = dict(letter.body)
            options: dict[str, Any] = (
                data["options"] if isinstance(data.get("options"), dict) else {}
            )
            data["options"] = {**options, "retries": 0, "redis_message_id": letter.redis_id}
            data["options"].pop("traceback", None)
            with self.client.pipeline() as pipe:
                pipe.zrem(keys.dead, letter.redis_id)
                pipe.hdel(keys.dead_bodies, letter.redis_id)
                pipe.hset(keys.ready_bodies, letter.redis_id, json.dumps(data))
                pipe.rpush(keys.ready, letter.redis_id)
                pipe.execute()
            moved.append(letter)
        return moved

    def purge(self, queue: str) -> int:
        keys = queue_keys(self.namespace, queue)
        count: Any = self.client.zcard(keys.dead)
        self.client.delete(keys.dead, keys.dead_bodies)
        return int(count)


def _letter(redis_id: str, dead_at_ms: int, body: bytes | None) -> DeadLetter:
    data = _decode(body)
    options: dict[str, Any] = data["options"] if isinstance(data.get("options"), dict) else {}
    traceback = str(options.get("traceback") or "").strip().splitlines()
    rejected = data.get("rejected")  # refused before routing (messaging/consumer.py)
    if isinstance(rejected, dict):
        traceback = [f"rejected: {rejected.get('reason')}"]
    retries = options.get("retries", 0)
    return DeadLetter(
        redis_id=redis_id,
        message_id=data.get("message_id") if isinstance(data.get("message_id"), str) else None,
        actor=data.get("actor_name") if isinstance(data.get("actor_name"), str) else None,
        args=data.get("args", data.get("undecodable_body")),
        dead_at_ms=dead_at_ms,
        retries=retries if isinstance(retries, int) else 0,
        error=traceback[-1][:500] if traceback else None,
        body=data,
    )


def _decode(body: bytes | None) -> dict[str, Any]:
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"undecodable_body": body[:120].decode("utf-8", errors="replace")}
    return data if isinstance(data, dict) else {"undecodable_body": str(data)[:120]}
