"""The scheduler's reconcile and retention schedules, decided in one place: the scheduler runs it
(workers/entrypoints/scheduler.py) and the console shows it (workers/console/data.py),
so what an operator reads is what runs."""

from __future__ import annotations

from datetime import UTC, datetime

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from workers.settings import Settings


def reconcile_trigger(settings: Settings) -> tuple[str, BaseTrigger | None]:
    """(what the console shows, the scheduler's trigger): every RECONCILE_EVERY_S
    seconds, anchored on the epoch so every scheduler computes the same fire times,
    unless that is 0; then the cron expression SCHEDULE_RECONCILE."""
    if settings.reconcile_every_s:
        every = settings.reconcile_every_s
        return f"every {every} s", IntervalTrigger(
            seconds=every, start_date=datetime(2000, 1, 1, tzinfo=UTC), timezone="UTC"
        )
    expr = settings.schedule_reconcile
    if not expr:
        return "disabled", None
    return expr, CronTrigger.from_crontab(expr, timezone="UTC")


def retention_trigger(settings: Settings) -> BaseTrigger | None:
    """The retention purge's schedule (SCHEDULE_RETENTION, cron, UTC), None when empty."""
    expr = settings.schedule_retention
    return CronTrigger.from_crontab(expr, timezone="UTC") if expr.strip() else None
