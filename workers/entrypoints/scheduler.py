"""``emotionviz scheduler``: publishes the periodic messages on cron schedules (UTC).

Built on APScheduler (cron triggers, misfire grace, coalescing). It only publishes
messages; workers do the work. Several schedulers may run (for availability): each
fire is claimed with Redis ``SET NX`` on a key naming the job and the scheduled fire
time it serves, so only one of them publishes it, even when one runs late.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from domain.messages import AnalyticsRecompute, MaintenanceReconcile, Publisher
from domain.periods import PeriodKind, period_containing
from workers.logging import get_logger
from workers.settings import Settings

log = get_logger("emotionviz.scheduler")

# A fire that could not run on time still runs if at most this late (then coalesced).
MISFIRE_GRACE_S = 300


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    trigger: BaseTrigger
    publish: Callable[[], int]  # returns the number of messages published


class FireGuard:
    """At most one publish per job and scheduled fire time, across every scheduler
    process. Keyed on the fire time the run serves, not on the clock when it runs: a
    scheduler that runs late (within the misfire grace) serves the same fire time as
    the one that ran on time, and finds it claimed."""

    def __init__(self, client: redis.Redis, namespace: str) -> None:
        self.client, self.namespace = client, namespace

    def claim(self, job: str, fire_time: datetime) -> bool:
        key = f"{self.namespace}:scheduler:{job}:{int(fire_time.timestamp())}"
        ttl_s = max(3600, MISFIRE_GRACE_S * 10)
        return bool(self.client.set(key, "1", nx=True, ex=ttl_s))


def served_fire_time(trigger: BaseTrigger, now: datetime) -> datetime:
    """The scheduled fire time a run at ``now`` serves: the latest one at or before
    ``now`` within the misfire grace (a run is only ever late, never early)."""
    served: datetime | None = None
    candidate = trigger.get_next_fire_time(None, now - timedelta(seconds=MISFIRE_GRACE_S))
    while candidate is not None and candidate <= now:
        served = candidate
        candidate = trigger.get_next_fire_time(candidate, candidate + timedelta(microseconds=1))
    return served or now.replace(microsecond=0)


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
    reconcile_trigger: BaseTrigger | None = None
    if settings.reconcile_every_s:
        # Anchored on the epoch, so every scheduler computes the same fire times.
        reconcile_trigger = IntervalTrigger(
            seconds=settings.reconcile_every_s,
            start_date=datetime(2000, 1, 1, tzinfo=UTC),
            timezone="UTC",
        )
    elif settings.schedule_reconcile:
        reconcile_trigger = CronTrigger.from_crontab(settings.schedule_reconcile, timezone="UTC")
    if reconcile_trigger is not None:
        jobs.append(
            ScheduledJob(
                "reconcile",
                reconcile_trigger,
                lambda: len([producer.publish(MaintenanceReconcile())]),
            )
        )
    return jobs


def run_job(job: ScheduledJob, guard: FireGuard, now: datetime | None = None) -> bool:
    fire_time = served_fire_time(job.trigger, now or datetime.now(UTC))
    if not guard.claim(job.name, fire_time):
        log.info(
            "scheduled job already fired by another scheduler",
            job=job.name,
            fire_time=fire_time.isoformat(),
        )
        return False
    count = job.publish()
    log.info("scheduled job fired", job=job.name, fire_time=fire_time.isoformat(), messages=count)
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
            misfire_grace_time=MISFIRE_GRACE_S,
            max_instances=1,
        )
    return scheduler
