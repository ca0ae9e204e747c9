"""Tiny counters in Redis for operators and the demo summary (retries, rejections)."""

from __future__ import annotations

import contextlib

import redis


class Counters:
    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client, self.namespace = client, namespace

    def _key(self, name: str) -> str:
        return f"{self.namespace}:stats:{name}"

    def incr(self, name: str) -> None:
        with contextlib.suppress(redis.RedisError):  # counters must never fail a job
            self.client.incr(self._key(name))

    def read(self, names: list[str]) -> dict[str, int]:
        values = self.client.mget([self._key(n) for n in names])
        return {n: int(v or 0) for n, v in zip(names, values, strict=True)}

    def reset(self, names: list[str]) -> None:
        self.client.delete(*[self._key(n) for n in names])
