"""``emotionviz scheduler``: publishes the periodic messages on cron schedules (UTC).

Built on APScheduler (cron triggers, misfire grace, coalescing). It only publishes
messages; workers do the work. Several schedulers may run (for availability): each
fire is claimed with Redis ``SET NX`` on a key naming the job and its minute, so only
one of them publishes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from domain.messages import AnalyticsRecompute, MaintenanceReconcile, Publisher
from domain.periods import PeriodKind, period_containing
from workers.logging import get_logger
from workers.settings import Settings

log = get_logger("emotionviz.scheduler")


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    trigger: BaseTrigger
    publish: Callable[[], int]  # returns the number of messages published


class FireGuard:
    """At most one publish per job and fire time, across every scheduler process."""

    def __init__(self, client: redis.Redis, namespace: str, resolution_s: int = 60) -> None:
        self.client, self.namespace, self.resolution_s = client, namespace, resolution_s

    def claim(self, job: str, now: datetime | None = None) -> bool:
        moment = int((now or datetime.now(UTC)).timestamp()) // self.resolution_s
        key = f"{self.namespace}:scheduler:{job}:{moment}"
        return bool(self.client.set(key, "1", nx=True, ex=max(3600, self.resolution_s * 10)))


def recompute_messages(kind: PeriodKind, today: datetime | None = None) -> AnalyticsRecompute:
    """The current and the previous period (late entries land in the previous one)."""
    day = (today or datetime.now(UTC)).date()
    current = period_containing(kind, day)
    previous = period_containing(kind, current.start.fromordinal(current.start.toordinal() - 1))
    return AnalyticsRecompute(period=kind, period_start=previous.start, period_end=current.end)


def default_jobs(settings: Settings, producer: Publisher) -> list[ScheduledJob]:
    jobs: list[ScheduledJob] = []
    for kind, expr in (
        ("day", settings.schedule_analytics_day),
        ("week", settings.schedule_analytics_week),
        ("month", settings.schedule_analytics_month),
    ):
        if expr:
            jobs.append(
                ScheduledJob(
                    f"analytics-{kind}",
                    CronTrigger.from_crontab(expr, timezone="UTC"),
                    lambda k=kind: len([producer.publish(recompute_messages(k))]),  # type: ignore[misc]
                )
            )
    if settings.schedule_reconcile:
        jobs.append(
            ScheduledJob(
                "reconcile",
                CronTrigger.from_crontab(settings.schedule_reconcile, timezone="UTC"),
                lambda: len([producer.publish(MaintenanceReconcile())]),
            )
        )
    return jobs


def run_job(job: ScheduledJob, guard: FireGuard) -> bool:
    if not guard.claim(job.name):
        log.info("scheduled job already fired by another scheduler", job=job.name)
        return False
    count = job.publish()
    log.info("scheduled job fired", job=job.name, messages=count)
    return True


def build_scheduler(
    jobs: list[ScheduledJob],
    guard: FireGuard,
    kind: type[BaseScheduler] = BlockingScheduler,
) -> BaseScheduler:
    scheduler = kind(timezone="UTC")
    for job in jobs:
        scheduler.add_job(
            run_job,
            job.trigger,
            args=(job, guard),
            id=job.name,
            coalesce=True,
            misfire_grace_time=300,
            max_instances=1,
        )
    return scheduler
