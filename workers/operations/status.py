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
    }
