"""The scheduler: two APScheduler instances on one Redis never double-fire."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
import redis
from apscheduler.triggers.cron import CronTrigger

from workers.entrypoints.scheduler import (
    FireGuard,
    ScheduledJob,
    build_scheduler,
    recompute_messages,
    run_job,
    served_fire_time,
)

pytestmark = pytest.mark.integration


def test_two_schedulers_fire_each_tick_once(redis_server_url: str, redis_namespace: str) -> None:
    client = redis.Redis.from_url(redis_server_url)
    fired: list[int] = []
    lock = threading.Lock()

    def publish() -> int:
        with lock:
            fired.append(int(time.time()))
        return 1

    schedulers = []
    for _ in range(2):
        guard = FireGuard(client, redis_namespace)
        job = ScheduledJob("tick", CronTrigger(second="*", timezone="UTC"), publish)
        schedulers.append(build_scheduler([job], guard))
    threads = [threading.Thread(target=s.start, daemon=True) for s in schedulers]
    for t in threads:
        t.start()
    time.sleep(3.6)
    for s in schedulers:
        s.shutdown(wait=True)
    client.close()
    per_second = Counter(fired)
    assert len(per_second) >= 3
    assert max(per_second.values()) == 1, per_second


def test_a_late_fire_is_published_once(redis_server_url: str, redis_namespace: str) -> None:
    """Two schedulers serve the 00:15 fire of a daily job; one runs on time, the other
    four minutes late (inside the misfire grace): one publish. The next day's fire is
    a new one."""
    client = redis.Redis.from_url(redis_server_url)
    published: list[str] = []
    job = ScheduledJob(
        "analytics-day",
        CronTrigger.from_crontab("15 0 * * *", timezone="UTC"),
        lambda: len([published.append("x")]),
    )
    on_time, late = FireGuard(client, redis_namespace), FireGuard(client, redis_namespace)
    fire = datetime(2026, 11, 24, 0, 15, tzinfo=UTC)
    assert run_job(job, on_time, now=fire + timedelta(seconds=1))
    assert not run_job(job, late, now=fire + timedelta(minutes=4, seconds=30))
    assert published == ["x"]
    assert run_job(job, late, now=fire + timedelta(days=1, seconds=2))
    assert published == ["x", "x"]
    client.close()


def test_fire_time_served_is_the_latest_scheduled_one() -> None:
    every_10_min = CronTrigger.from_crontab("*/10 * * * *", timezone="UTC")
    now = datetime(2026, 11, 24, 0, 24, 59, tzinfo=UTC)
    assert served_fire_time(every_10_min, now) == datetime(2026, 11, 24, 0, 20, tzinfo=UTC)
    exact = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)
    assert served_fire_time(every_10_min, exact) == exact


def test_scheduled_recompute_covers_previous_and_current_period() -> None:
    message = recompute_messages("week", datetime(2026, 11, 24, 0, 30, tzinfo=UTC))
    assert (message.period_start, message.period_end) == (date(2026, 11, 16), date(2026, 11, 29))
    month = recompute_messages("month", datetime(2026, 3, 1, 0, 45, tzinfo=UTC))
    assert (month.period_start, month.period_end) == (date(2026, 2, 1), date(2026, 3, 31))
