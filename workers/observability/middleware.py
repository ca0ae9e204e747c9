"""The metrics and health middleware of a worker process (added by
workers/entrypoints/worker.py when METRICS_PORT is not 0)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from dramatiq.middleware import Middleware

from workers.messaging.redis_keys import canonical_queue
from workers.observability import metrics
from workers.observability.health import MULTIPROC_ENV, HealthReporter, metrics_dir


def worker_middleware(port: int) -> list[Middleware]:
    """Dramatiq's Prometheus middleware (whose forked server is ours), our message
    counters and the health reporter, all on one multiprocess directory."""
    directory = metrics_dir(port)
    directory.mkdir(parents=True, exist_ok=True)
    # Before prometheus_client and Dramatiq's middleware are imported: they read these.
    os.environ.setdefault(MULTIPROC_ENV, str(directory))
    os.environ.setdefault("dramatiq_prom_db", str(directory))
    from dramatiq.middleware.prometheus import Prometheus

    class Metrics(Prometheus):  # type: ignore[misc]
        @property
        def forks(self) -> list[Callable[[], int]]:
            from workers.observability.exposition import serve

            return [serve]

    return [Metrics(), MessageCounters(), HealthReporter(directory)]


class MessageCounters(Middleware):
    """emotionviz_messages_processed_total / _retries_total / _dead_lettered_total."""

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if exception is None:
            outcome = "ok"
        elif message.failed:
            outcome = "failed"
        else:
            outcome = "retry"
        metrics.count_processed(message.queue_name, message.actor_name, outcome)

    def after_enqueue(self, broker: Any, message: Any, delay: int | None) -> None:
        if message.options.get("retries"):
            metrics.count_retry(canonical_queue(message.queue_name), message.actor_name)

    def after_nack(self, broker: Any, message: Any) -> None:
        metrics.count_dead_letter(canonical_queue(message.queue_name), message.actor_name)
