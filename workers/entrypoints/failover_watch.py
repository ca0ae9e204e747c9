"""Redis failovers in every worker process (BROKER_URL or REDIS_URL =
redis+sentinel://): a Dramatiq middleware that starts the sentinels' watch at worker
boot (workers/messaging/failover.py), one per deployment that carries our writes (the
broker's, where a failover loses enqueues, and REDIS_URL's when it is another), and
stops them at shutdown. When the primary changes it
logs, counts (emotionviz_redis_failovers_total) and, in the one process that claims the
failover, runs the failover's reconcile at once (bootstrap.run_failover_reconcile),
not RECONCILE_GRACE_S later, and records the outcome for ``status``.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from dramatiq.middleware import Middleware

from domain.errors import EmotionVizError
from workers import bootstrap
from workers.logging import get_logger
from workers.messaging import failover
from workers.observability import metrics
from workers.settings import Settings

log = get_logger("emotionviz.failover")

# How long the failover's reconcile keeps trying (the new primary refusing writes for a
# moment, another reconcile holding the lock) before it leaves the rows to the
# periodic pass.
RECONCILE_FOR_S = 60.0
RETRY_EVERY_S = 0.5


def handle_failover(seen: failover.FailoverSeen, settings: Settings) -> None:
    """What a process does when it sees a new primary."""
    metrics.count_redis_failover()
    log.warning(
        "redis failover seen",
        sentinels=seen.where,
        old_primary=seen.old,
        new_primary=seen.new,
        epoch=seen.epoch,
        no_primary_s=seen.no_primary_s,
    )
    client, namespace = bootstrap.redis_client(), settings.redis_namespace
    deadline = time.monotonic() + RECONCILE_FOR_S
    while True:
        try:
            if not failover.claim(client, namespace, seen):
                return  # another process handles this one
            break
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                log.error("redis failover: could not claim its reconcile", error=str(exc))
                return
            time.sleep(RETRY_EVERY_S)
    started = time.monotonic()
    while True:
        try:
            report = bootstrap.run_failover_reconcile(seen.seen_at)
            if not report.skipped:
                break
            error = "another reconcile holds the lock"
        except (EmotionVizError, redis.RedisError) as exc:
            error = str(exc)
        if time.monotonic() > deadline:
            log.error("redis failover reconcile gave up; the periodic pass remains", error=error)
            failover.record(client, namespace, seen, reconciled=False, error=error[:300])
            return
        time.sleep(RETRY_EVERY_S)
    took = round(time.monotonic() - started, 3)
    metrics.count_reconciled("failover", report.unfinished)
    log.warning(
        "redis failover reconciled",
        republished=report.unfinished,
        adopted=report.adopted,
        took_s=took,
    )
    failover.record(
        client,
        namespace,
        seen,
        reconciled=True,
        republished=report.unfinished,
        adopted=report.adopted,
        reconciled_at=time.time(),
    )


def urls_to_watch(settings: Settings) -> list[str]:
    """The ``redis+sentinel://`` URLs this process watches (failover.urls_to_watch)."""
    redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
    broker_url = settings.broker_url.get_secret_value() if settings.broker_url else None
    return failover.urls_to_watch(redis_url, broker_url)


class FailoverWatchMiddleware(Middleware):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.watches: list[failover.FailoverWatch] = []

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        # None when one server (or RabbitMQ) carries our writes: nothing fails over.
        for url in urls_to_watch(self.settings):
            watch = failover.FailoverWatch(
                url,
                lambda seen: handle_failover(seen, self.settings),
                poll_s=self.settings.redis_sentinel_poll_s,
            )
            watch.start()
            self.watches.append(watch)
            log.info(
                "redis failover watch started",
                sentinels=watch.where,
                poll_s=self.settings.redis_sentinel_poll_s,
            )

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        for watch in self.watches:
            watch.stop()
