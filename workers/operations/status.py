"""The status at a glance (queues, workers, rows, recent failures) as plain data:
``emotionviz status`` (and its --json) and the console's overview."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from db.repositories.pauses import PausedRow
from domain.failures import failure_class
from domain.ledger import start_of_utc_day
from workers.observability import snapshot
from workers.observability.snapshot import WorkRows
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
        "redis_failover": snap.redis_failover,  # issue 22.1
        "paused_queues": [_paused(row) for row in rows.paused_queues],  # issue 24.3
        "paid_calls_today": _paid_calls_today(settings, rows, snap.taken_at),  # issue 23.3
        "analytics_refresh": _analytics_refresh(rows),
    }


# Past this age the oldest queued analytics refresh means no refresher drains the queue
# (each worker process drains it every ANALYTICS_REFRESH_EVERY_S, 1 s by default; the
# maintenance pass every RECONCILE_EVERY_S, 15 s).
ANALYTICS_BEHIND_S = 120.0


def _analytics_refresh(rows: WorkRows) -> dict[str, Any]:
    """The refresher's queue: rows waiting, the oldest one's age, and whether that age
    says no refresher is draining it."""
    backlog = rows.analytics_backlog
    if backlog is None:
        return {"queued": 0, "oldest_age_s": None, "behind": False}
    oldest = None if backlog.oldest_age_s is None else round(backlog.oldest_age_s, 1)
    return {
        "queued": backlog.queued,
        "oldest_age_s": oldest,
        "behind": oldest is not None and oldest > ANALYTICS_BEHIND_S,
    }


def _paid_calls_today(settings: Settings, rows: WorkRows, taken_at: float) -> dict[str, Any]:
    """Today's (UTC) paid calls, their cost and the people who made them, and the rows
    waiting for the next day because their person's budget ran out."""
    day = rows.spend_today
    budget = settings.user_daily_budget_usd
    since = start_of_utc_day(datetime.fromtimestamp(taken_at, UTC))
    return {
        "since": since.isoformat(timespec="seconds"),
        "calls": 0 if day is None else day.calls,
        "cost_usd": "0" if day is None else str(day.cost_usd),
        "people": 0 if day is None else day.people,
        "user_daily_budget_usd": None if budget is None else str(budget),
        "waiting_on_budget": rows.budget_waits,
    }


def _paused(row: PausedRow) -> dict[str, Any]:
    from workers.operations.pauses import pause_of  # as `queue list` shows it

    return pause_of(row).as_dict()
