"""Tiny counters in Redis for operators and the demo summary (retries, rejections)."""

from __future__ import annotations

import contextlib
from functools import lru_cache

import redis

from workers import runtime
from workers.settings import get_settings


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    return redis.Redis.from_url(runtime.redis_url(get_settings()))


def _key(name: str) -> str:
    return f"{get_settings().redis_namespace}:stats:{name}"


def incr(name: str) -> None:
    with contextlib.suppress(redis.RedisError):  # counters must never fail a job
        _client().incr(_key(name))


def read(names: list[str]) -> dict[str, int]:
    values = _client().mget([_key(n) for n in names])
    return {n: int(v or 0) for n, v in zip(names, values, strict=True)}


def reset(names: list[str]) -> None:
    _client().delete(*[_key(n) for n in names])
