"""The status at a glance (queues, workers, rows, recent failures) as plain data:
``emotionviz status`` (and its --json) and the console's overview."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from domain.failures import failure_class
from workers.observability import snapshot
from workers.settings import Settings


def collect_status(settings: Settings) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (also its --json), from the process's
    shared snapshot (workers/observability/snapshot.py): the console and the metrics
    read the same one, computed at most every METRICS_CACHE_S seconds. Raises what
    made the broker or the database unreadable (``--quiet`` exits 1 on it)."""
    snap = snapshot.shared().get()
    for source in ("broker", "database"):
        if source in snap.errors:
            raise snap.errors[source]
    broker, rows = snap.broker, snap.rows
    assert broker is not None and rows is not None
    failures = Counter(failure_class(reason) for reason in rows.failure_reasons_last_hour)
    return {
        **broker.as_dict(),
        "workers_alive": None if "workers" in broker.not_measured else len(broker.workers),
        "visualizations": rows.open,
        "visualizations_finished_last_hour": rows.finished_last_hour,
        "visualizations_stuck": rows.stuck,
        "failures_last_hour": dict(failures.most_common()),
        "intake_sessions": rows.intake,
        "read_at": datetime.fromtimestamp(snap.taken_at, UTC).isoformat(timespec="seconds"),
        "redis_failover": _last_failover(settings),  # issue 22.1
        "paused_queues": _paused_queues(),  # issue 24.3
        "paid_calls_today": _paid_calls_today(settings),  # issue 23.3
    }


def _paid_calls_today(settings: Settings) -> dict[str, Any]:
    """Today's paid calls and spend, and the rows waiting on a daily budget
    (workers/operations/usage.py)."""
    from workers.operations.usage import spend_today

    return spend_today(settings)


def _paused_queues() -> list[dict[str, Any]]:
    """The paused queues with since and by (workers/operations/pauses.py)."""
    from workers.operations.pauses import paused_queues

    return [pause.as_dict() for pause in paused_queues()]


def _last_failover(settings: Settings) -> dict[str, Any] | None:
    """The last Redis Sentinel failover seen and its reconcile (None: none, or one
    server); unreadable Redis shows in the broker's own error above."""
    import redis

    from domain.sentinel_url import is_sentinel_url
    from workers import bootstrap
    from workers.messaging import failover

    if not is_sentinel_url(bootstrap.redis_url(settings)):
        return None
    try:
        return failover.last(bootstrap.redis_client(), settings.redis_namespace)
    except redis.RedisError:
        return None
