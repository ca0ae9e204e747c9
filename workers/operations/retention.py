"""The retention purge: ``emotionviz retention run`` and the scheduler's ``retention``
job (SCHEDULE_RETENTION). RETENTION_*_DAYS say how long each kind of row is kept (0:
forever); each kind is purged RETENTION_BATCH rows per transaction (short locks, a
crash loses one batch's work at most and the next run carries on), its progress
logged, its rows counted in ``emotionviz_retention_purged_rows_total{kind}``.

Failed rows' dead letters (the messages that named their entries) go with them.
completion_events are purged by the event dispatcher (EVENTS_RETENTION_DAYS).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from db.repositories.retention import KINDS, retention_repository
from workers import bootstrap
from workers.logging import get_logger
from workers.messaging.erasure import erase_from_redis
from workers.operations.audit import audited
from workers.settings import Settings

log = get_logger("emotionviz.retention")


@lru_cache(maxsize=1)
def _purged_metric() -> Any:
    from prometheus_client import Counter

    return Counter(
        "emotionviz_retention_purged_rows_total",
        "Rows the retention purge removed or trimmed, by kind (raw_responses, "
        "failed_rows, operator_actions, model_calls)",
        ["kind"],
    )


def retention_days(settings: Settings) -> dict[str, float]:
    """Days each kind is kept (0: kept forever, not purged)."""
    return {
        "raw_responses": settings.retention_raw_responses_days,
        "failed_rows": settings.retention_failed_days,
        "operator_actions": settings.retention_operator_actions_days,
        "model_calls": settings.retention_model_calls_days,
    }


@dataclass
class RetentionReport:
    dry_run: bool
    kinds: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: int = 0

    @property
    def total(self) -> int:
        return sum(int(k.get("rows", 0)) for k in self.kinds.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "kinds": self.kinds,
            "dead_letters": self.dead_letters,
            "total": self.total,
        }


def run_retention(
    settings: Settings, *, dry_run: bool = False, now: datetime | None = None
) -> RetentionReport:
    """Purge (or count, with ``dry_run``) every kind whose retention is on."""
    now = now or datetime.now(UTC)
    report = RetentionReport(dry_run)
    failed_entries: list[str] = []
    for kind in KINDS:
        days = retention_days(settings)[kind]
        if days <= 0:
            report.kinds[kind] = {"days": 0, "rows": 0, "kept": "forever"}
            continue
        cutoff = now - timedelta(days=days)
        if dry_run:
            with bootstrap.unit_of_work() as uow:
                due = retention_repository(uow).due(kind, cutoff)
            report.kinds[kind] = {"days": days, "cutoff": cutoff.isoformat(), "rows": due}
            continue
        rows, batches, started = 0, 0, time.monotonic()
        while True:
            with bootstrap.unit_of_work() as uow:
                purged = retention_repository(uow).purge_batch(
                    kind, cutoff, settings.retention_batch
                )
                uow.commit()
            batches += 1
            rows += purged.rows
            failed_entries += [str(e) for e in purged.entry_ids]
            if purged.rows:
                _purged_metric().labels(kind).inc(purged.rows)
                log.info("retention batch purged", kind=kind, rows=purged.rows, total=rows)
            if purged.rows < settings.retention_batch:
                break
        report.kinds[kind] = {
            "days": days,
            "cutoff": cutoff.isoformat(),
            "rows": rows,
            "batches": batches,
            "seconds": round(time.monotonic() - started, 3),
        }
    if failed_entries and bootstrap.rabbitmq_url(settings) is None:
        swept = erase_from_redis(
            bootstrap.redis_client(),
            settings.redis_namespace,
            failed_entries,
            dead_letters_only=True,
        )
        report.dead_letters = swept.total_messages
    if not dry_run:
        log.info("retention run finished", rows=report.total, dead_letters=report.dead_letters)
    return report


def run_and_audit(
    settings: Settings, *, dry_run: bool, operator: str | None = None
) -> RetentionReport:
    """A run that changed something is recorded in the operators' trail."""
    report = run_retention(settings, dry_run=dry_run)
    if not dry_run and report.total:
        audited(
            "retention_run",
            operator=operator,
            count=report.total,
            detail={kind: int(k.get("rows", 0)) for kind, k in report.kinds.items()},
        )
    return report
