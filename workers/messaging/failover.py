"""Redis Sentinel failovers, seen and remembered.

Replication to the replica is asynchronous: the last enqueues before a primary dies can
be missing on the replica the sentinels promote. The clients follow the new primary by
themselves (workers/messaging/redis_clients.py); what they cannot do is bring back a
lost write. So each worker process watches the sentinels (``FailoverWatch``: one
question per REDIS_SENTINEL_POLL_S to the first sentinel that answers) and, when the
primary's address changes, reports a ``FailoverSeen``; one watch per deployment that
carries our writes (``urls_to_watch``: the broker's, and REDIS_URL's when it is
another). One process per failover (``claim``: SET NX on the new primary) then runs
the failover's reconcile
(workers/entrypoints/failover_watch.py); ``record`` keeps the last one for ``status``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import redis
from redis.sentinel import MasterNotFoundError

from domain.sentinel_url import SentinelTarget, is_sentinel_url, parse_sentinel_url
from workers.logging import get_logger
from workers.messaging.redis_clients import sentinel_manager

log = get_logger("emotionviz.failover")

# How long a claim on one failover is kept: past it, nobody sees that failover again.
CLAIM_TTL_S = 86_400


@dataclass(frozen=True)
class FailoverSeen:
    """A new primary. ``no_primary_s``: how long this process's watch found no
    primary to name before it (sentinels name none while the old one is down and not
    yet replaced), the gap as the watch saw it."""

    old: str
    new: str
    epoch: int
    seen_at: float  # Unix time
    no_primary_s: float
    where: str = ""  # the deployment: its sentinels and service (no credentials)


def _address(found: tuple[Any, Any]) -> str:
    host, port = found
    return f"{host.decode() if isinstance(host, bytes) else host}:{int(port)}"


class FailoverWatch:
    """A thread that asks the sentinels for the primary every ``poll_s`` and calls
    ``on_failover`` (in the thread) when the address changes. Its first answer is the
    reference: a process that starts after a failover sees none."""

    def __init__(
        self, url: str, on_failover: Callable[[FailoverSeen], None], *, poll_s: float = 1.0
    ) -> None:
        self._sentinel, self._target = sentinel_manager(url)
        self._on_failover = on_failover
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.primary: str | None = None
        self._no_primary_since: float | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="redis-failover-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        for client in self._sentinel.sentinels:
            client.close()

    def _epoch(self) -> int:
        """The failover's configuration epoch: the highest the sentinels report (one
        that has not heard of the failover yet still reports the one before)."""
        epochs = [0]
        for client in self._sentinel.sentinels:
            try:
                state: Any = client.sentinel_master(self._target.service)
                epochs.append(int(state.get("config-epoch", 0)))
            except (redis.RedisError, OSError, ValueError):
                continue
        return max(epochs)

    @property
    def where(self) -> str:
        return self._target.where()  # no credentials

    def check(self) -> FailoverSeen | None:
        """One look (the thread's step; tests call it too)."""
        try:
            found = _address(self._sentinel.discover_master(self._target.service))  # type: ignore[no-untyped-call]
        except (MasterNotFoundError, redis.RedisError, OSError):
            if self._no_primary_since is None:
                self._no_primary_since = time.monotonic()
                log.warning("redis sentinels name no primary", service=self._target.service)
            return None
        gap = 0.0
        if self._no_primary_since is not None:
            gap = time.monotonic() - self._no_primary_since
            self._no_primary_since = None
        previous, self.primary = self.primary, found
        if previous is None or previous == found:
            return None
        return FailoverSeen(previous, found, self._epoch(), time.time(), round(gap, 3), self.where)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                seen = self.check()
                if seen is not None:
                    _tell_listeners(seen)
                    self._on_failover(seen)
            except Exception:  # the watch must outlive any one failure
                log.exception("redis failover watch step failed")
            self._stop.wait(self._poll_s)


# Called (in the watch's thread, before the failover's own handling) when a failover is
# seen: what a new primary may hold stale is re-checked at once (the paused queues'
# mirror: workers/messaging/pause_sync.py).
_listeners: list[Callable[[FailoverSeen], None]] = []


def on_failover(listener: Callable[[FailoverSeen], None]) -> None:
    """Call ``listener`` on every failover this process sees (once per listener)."""
    if listener not in _listeners:
        _listeners.append(listener)


def _tell_listeners(seen: FailoverSeen) -> None:
    for listener in list(_listeners):
        try:
            listener(seen)
        except Exception:  # one listener never stops the failover's handling
            log.exception("redis failover listener failed")


def urls_to_watch(redis_url: str | None, broker_url: str | None) -> list[str]:
    """The Sentinel deployments whose failover can lose our writes, each once: the
    broker's first (BROKER_URL, else REDIS_URL, as workers/messaging/broker.py builds
    its client: a failover there loses enqueues), then REDIS_URL's when it is another
    deployment. Two URLs name the same one when they share the service and a sentinel
    (another db number, another order of sentinels). RabbitMQ and plain Redis: none."""
    broker = None if broker_url and broker_url.startswith("amqp") else broker_url or redis_url
    urls: list[str] = []
    known: list[SentinelTarget] = []
    for url in (broker, redis_url):
        if url is None or not is_sentinel_url(url):
            continue
        target = parse_sentinel_url(url)
        if any(
            t.service == target.service and set(t.sentinels) & set(target.sentinels) for t in known
        ):
            continue
        known.append(target)
        urls.append(url)
    return urls


def _key(namespace: str, name: str) -> str:
    return f"{namespace}:redis-failover:{name}"


def claim(client: redis.Redis, namespace: str, seen: FailoverSeen) -> bool:
    """True for the one process that handles this failover (every worker sees it)."""
    name = f"claim:{seen.epoch}:{seen.new}"
    return bool(client.set(_key(namespace, name), seen.seen_at, nx=True, ex=CLAIM_TTL_S))


def record(client: redis.Redis, namespace: str, seen: FailoverSeen, **outcome: Any) -> None:
    """The last failover, for ``status``: what was seen, and what its reconcile did."""
    client.set(_key(namespace, "last"), json.dumps({**asdict(seen), **outcome}))


def last(client: redis.Redis, namespace: str) -> dict[str, Any] | None:
    raw = client.get(_key(namespace, "last"))
    if raw is None:
        return None
    value = json.loads(raw)
    return value if isinstance(value, dict) else None
