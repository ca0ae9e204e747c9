"""The scheduler: two APScheduler instances on one Redis never double-fire."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import UTC, date, datetime

import pytest
import redis
from apscheduler.triggers.cron import CronTrigger

from workers.entrypoints.scheduler import (
    FireGuard,
    ScheduledJob,
    build_scheduler,
    recompute_messages,
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
        guard = FireGuard(client, redis_namespace, resolution_s=1)
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


def test_guard_claims_once_per_job_and_minute(redis_server_url: str, redis_namespace: str) -> None:
    client = redis.Redis.from_url(redis_server_url)
    guard = FireGuard(client, redis_namespace)
    moment = datetime(2026, 11, 24, 0, 15, 2, tzinfo=UTC)
    assert guard.claim("analytics-day", moment)
    assert not guard.claim("analytics-day", moment.replace(second=40))
    assert guard.claim("analytics-week", moment)
    assert guard.claim("analytics-day", moment.replace(minute=16))
    client.close()


def test_scheduled_recompute_covers_previous_and_current_period() -> None:
    message = recompute_messages("week", datetime(2026, 11, 24, 0, 30, tzinfo=UTC))
    assert (message.period_start, message.period_end) == (date(2026, 11, 16), date(2026, 11, 29))
    month = recompute_messages("month", datetime(2026, 3, 1, 0, 45, tzinfo=UTC))
    assert (month.period_start, month.period_end) == (date(2026, 2, 1), date(2026, 3, 31))
