"""``emotionviz scheduler``: publishes the periodic messages on cron schedules (UTC).

Built on APScheduler (cron triggers, misfire grace, coalescing). It only publishes
messages; workers do the work. Several schedulers may run (for availability): each
fire is served once across all of them, keyed on the job and the scheduled fire time
it serves, so a scheduler that runs late finds it served.

A fire is marked served only after its publish succeeded. While one scheduler
publishes it holds a short Redis lock (redis-py's ``Lock``, token-checked, with a
timeout); a failed publish releases the lock and the fire is tried again, by this
scheduler or another, every RETRY_S until the misfire grace (or the next fire) runs
out. A scheduler that dies mid-publish leaves a lock that expires after LOCK_S, and
another takes over. Every attempt's outcome is a metric
(``emotionviz_scheduler_fires_total{job,outcome}``, outcome published, failed,
skipped or missed), and each served fire sets the time by which the next one is due
(``emotionviz_scheduler_next_fire_due_timestamp_seconds``): docs/monitoring/alerts.yml
alerts on both.

The retention purge (SCHEDULE_RETENTION) is the one job run in the scheduler itself
rather than published (``run_retention_job``: batched statements, no model call).

The analytics recompute fans out: one ``analytics.recompute`` per batch of users
(workers/services/analytics.py: ``plan_recompute``, shared with the CLI), so the
nightly run spreads over every analytics worker, each message well under the job time
limit.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from redis.exceptions import LockError
from redis.lock import Lock

from db.uow import UnitOfWork
from domain.messages import AnalyticsRecompute, MaintenanceReconcile, Publisher
from domain.periods import PeriodKind, period_containing
from workers.logging import get_logger
from workers.observability import metrics
from workers.schedules import reconcile_trigger, retention_trigger
from workers.settings import Settings

log = get_logger("emotionviz.scheduler")

# A fire that could not run on time still runs if at most this late (then coalesced);
# a fire whose publish failed is retried within the same window.
MISFIRE_GRACE_S = 300
# Between two attempts at a fire (a failed publish, or another scheduler publishing).
RETRY_S = 10.0
# How long one scheduler may hold a fire while it publishes (a dead one's lock expires).
LOCK_S = 120
# Margin after the next fire's grace before the due time (the alert's threshold).
DUE_MARGIN_S = 60


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    trigger: BaseTrigger
    publish: Callable[[], int]  # returns the number of messages published


class Claim(enum.Enum):
    OURS = "ours"  # publish, then ``served`` (or ``release`` on failure)
    SERVED = "served"  # published already, by this or another scheduler
    BUSY = "busy"  # another scheduler is publishing it now


class FireGuard:
    """At most one publish per job and scheduled fire time, across every scheduler
    process, and none lost to a failed publish. Keyed on the fire time the run serves,
    not on the clock when it runs: a scheduler that runs late (within the misfire
    grace) serves the same fire time as the one that ran on time."""

    def __init__(self, client: redis.Redis, namespace: str, *, lock_s: float = LOCK_S) -> None:
        self.client, self.namespace, self.lock_s = client, namespace, lock_s
        self._held: dict[str, Lock] = {}

    def _key(self, job: str, fire_time: datetime) -> str:
        return f"{self.namespace}:scheduler:{job}:{int(fire_time.timestamp())}"

    def claim(self, job: str, fire_time: datetime) -> Claim:
        key = self._key(job, fire_time)
        if self.client.exists(key):
            return Claim.SERVED
        lock = self.client.lock(f"{key}:publishing", timeout=self.lock_s, blocking=False)
        if not lock.acquire():
            return Claim.BUSY
        # Served between our check and our lock (its publisher released just then)?
        if self.client.exists(key):
            lock.release()
            return Claim.SERVED
        self._held[key] = lock
        return Claim.OURS

    def served(self, job: str, fire_time: datetime) -> None:
        key = self._key(job, fire_time)
        ttl_s = max(3600, MISFIRE_GRACE_S * 10)
        self.client.set(key, "1", ex=ttl_s)
        self.release(job, fire_time)

    def release(self, job: str, fire_time: datetime) -> None:
        lock = self._held.pop(self._key(job, fire_time), None)
        if lock is not None:
            # LockError: expired (a publish longer than lock_s), nothing to release.
            with contextlib.suppress(LockError):
                lock.release()


def served_fire_time(trigger: BaseTrigger, now: datetime) -> datetime:
    """The scheduled fire time a run at ``now`` serves: the latest one at or before
    ``now`` within the misfire grace (a run is only ever late, never early)."""
    served: datetime | None = None
    candidate = trigger.get_next_fire_time(None, now - timedelta(seconds=MISFIRE_GRACE_S))
    while candidate is not None and candidate <= now:
        served = candidate
        candidate = trigger.get_next_fire_time(candidate, candidate + timedelta(microseconds=1))
    return served or now.replace(microsecond=0)


def _next_fire(trigger: BaseTrigger, after: datetime) -> datetime | None:
    return trigger.get_next_fire_time(after, after + timedelta(microseconds=1))  # type: ignore[no-any-return]


def next_due(trigger: BaseTrigger, after: datetime) -> datetime | None:
    """When the fire after ``after`` must have been served: its time, its grace (the
    retries) and a margin."""
    nxt = _next_fire(trigger, after)
    return None if nxt is None else nxt + timedelta(seconds=MISFIRE_GRACE_S + DUE_MARGIN_S)


def recompute_messages(kind: PeriodKind, today: datetime | None = None) -> AnalyticsRecompute:
    """The current and the previous period (late entries land in the previous one)."""
    day = (today or datetime.now(UTC)).date()
    current = period_containing(kind, day)
    previous = period_containing(kind, current.start.fromordinal(current.start.toordinal() - 1))
    return AnalyticsRecompute(period=kind, period_start=previous.start, period_end=current.end)


def publish_recompute(
    producer: Publisher, uow_factory: Callable[[], UnitOfWork], kind: PeriodKind
) -> int:
    """The scheduled recompute of ``kind``, one message per batch of users."""
    from workers.services.analytics import plan_recompute

    published = 0
    for messages in plan_recompute(uow_factory, recompute_messages(kind)):
        producer.publish_many(messages)
        published += len(messages)
    return published


def run_retention_job(settings: Settings) -> int:
    """The retention purge, run here rather than published: it is a few batched
    statements (no model call, nothing a worker's retry policy would add), and the
    fire guard already makes one scheduler run it. Concurrent runs (a purge longer than
    LOCK_S) skip each other's locked rows. Returns the rows purged."""
    from workers.operations.retention import run_and_audit

    return run_and_audit(settings, dry_run=False, operator="scheduler").total


def default_jobs(
    settings: Settings, producer: Publisher, uow_factory: Callable[[], UnitOfWork]
) -> list[ScheduledJob]:
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
                    lambda k=kind: publish_recompute(producer, uow_factory, k),  # type: ignore[misc]
                )
            )
    retention_at = retention_trigger(settings)
    if retention_at is not None:
        jobs.append(ScheduledJob("retention", retention_at, lambda: run_retention_job(settings)))
    _, reconcile_at = reconcile_trigger(settings)  # anchored on the epoch: all agree
    if reconcile_at is not None:
        jobs.append(
            ScheduledJob(
                "reconcile",
                reconcile_at,
                lambda: len([producer.publish(MaintenanceReconcile())]),
            )
        )
    return jobs


def _retry_until(job: ScheduledJob, fire_time: datetime) -> datetime:
    """The last moment a fire may still be tried: its grace, or its next fire if that
    comes sooner (a job every 15 s is retried by its next tick)."""
    limit = fire_time + timedelta(seconds=MISFIRE_GRACE_S)
    nxt = _next_fire(job.trigger, fire_time)
    return limit if nxt is None else min(limit, nxt)


def _mark_served(job: ScheduledJob, fire_time: datetime) -> None:
    due = next_due(job.trigger, fire_time)
    if due is not None:
        metrics.scheduler_next_due(job.name, due.timestamp())


def run_job(
    job: ScheduledJob,
    guard: FireGuard,
    now: datetime | None = None,
    *,
    retry_s: float = RETRY_S,
    stop: threading.Event | None = None,
) -> bool:
    """Serve the fire ``now`` belongs to, unless served already; True if this call
    published it. A failed attempt (the publish, or Redis for the guard) is retried
    every ``retry_s`` until the fire's window ends (``_retry_until``) or ``stop``."""
    started = now or datetime.now(UTC)
    fire_time = served_fire_time(job.trigger, started)
    until = time.monotonic() + (_retry_until(job, fire_time) - started).total_seconds()
    stop = stop or threading.Event()
    context = {"job": job.name, "fire_time": fire_time.isoformat()}
    while True:
        try:
            claim = guard.claim(job.name, fire_time)
            if claim is Claim.SERVED:
                log.info("scheduled job already fired", **context)
                metrics.count_scheduler_fire(job.name, "skipped")
                _mark_served(job, fire_time)
                return False
            if claim is Claim.OURS:
                try:
                    count = job.publish()
                except BaseException:
                    guard.release(job.name, fire_time)
                    raise
                guard.served(job.name, fire_time)
                log.info("scheduled job fired", messages=count, **context)
                metrics.count_scheduler_fire(job.name, "published")
                metrics.scheduler_published(job.name, time.time())
                _mark_served(job, fire_time)
                return True
        except Exception as exc:  # noqa: BLE001 - any failure is retried, then counted
            log.warning(
                "scheduled job could not publish; will try again",
                error=type(exc).__name__,
                **context,
            )
            metrics.count_scheduler_fire(job.name, "failed")
        # Failed, or another scheduler is publishing it: try again while the window lasts.
        if time.monotonic() + retry_s > until:
            log.error("scheduled job not published within its window", **context)
            return False
        if stop.wait(retry_s):
            return False


def _count_missed(event: JobExecutionEvent) -> None:
    log.warning("scheduled job missed its fire time", job=event.job_id)
    metrics.count_scheduler_fire(str(event.job_id), "missed")


def build_scheduler(
    jobs: list[ScheduledJob],
    guard: FireGuard,
    kind: type[BaseScheduler] = BlockingScheduler,
    *,
    stop: threading.Event | None = None,
) -> BaseScheduler:
    scheduler = kind(timezone="UTC")
    now = datetime.now(UTC)
    for job in jobs:
        scheduler.add_job(
            run_job,
            job.trigger,
            args=(job, guard),
            kwargs={"stop": stop},
            id=job.name,
            coalesce=True,
            misfire_grace_time=MISFIRE_GRACE_S,
            max_instances=1,
        )
        metrics.init_scheduler_job(job.name)
        # Due from the start: a scheduler that never manages to fire is seen too.
        nxt = job.trigger.get_next_fire_time(None, now)
        if nxt is not None:
            due = nxt + timedelta(seconds=MISFIRE_GRACE_S + DUE_MARGIN_S)
            metrics.scheduler_next_due(job.name, due.timestamp())
    scheduler.add_listener(_count_missed, EVENT_JOB_MISSED)
    return scheduler
