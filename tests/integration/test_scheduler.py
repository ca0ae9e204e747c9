"""The scheduler: two APScheduler instances on one Redis never double-fire, a failed
publish is retried and not lost, and the scheduled recompute fans out over every user
exactly once."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import dramatiq
import pytest
import redis
from apscheduler.triggers.cron import CronTrigger
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.messages import AnalyticsRecompute
from workers.entrypoints.scheduler import (
    MISFIRE_GRACE_S,
    FireGuard,
    ScheduledJob,
    build_scheduler,
    default_jobs,
    recompute_messages,
    run_job,
    served_fire_time,
)
from workers.messaging.producer import Producer
from workers.messaging.redis_keys import queue_keys
from workers.services.analytics import USER_BATCH, lane_of, plan_recompute, recompute
from workers.settings import Settings

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


DAILY = CronTrigger.from_crontab("15 0 * * *", timezone="UTC")
FIRE = datetime(2026, 11, 24, 0, 15, tzinfo=UTC)


def _fires(job: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "emotionviz_scheduler_fires_total", {"job": job, "outcome": outcome}
    )
    return value or 0.0


class FlakyPublish:
    """A publish that fails its first ``failures`` calls (the broker unreachable)."""

    def __init__(self, failures: int, seconds: float = 0.0) -> None:
        self.failures, self.seconds = failures, seconds
        self.calls = self.published = 0
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            self.calls += 1
            failing = self.calls <= self.failures
        time.sleep(self.seconds)
        if failing:
            raise redis.ConnectionError("broker unreachable")
        with self.lock:
            self.published += 1
        return 1


def test_a_failed_publish_is_retried_not_lost(redis_server_url: str, redis_namespace: str) -> None:
    client = redis.Redis.from_url(redis_server_url)
    publish = FlakyPublish(failures=2)
    name = f"day-{uuid.uuid4().hex[:6]}"
    job = ScheduledJob(name, DAILY, publish)
    assert run_job(job, FireGuard(client, redis_namespace), now=FIRE, retry_s=0.05)
    assert (publish.calls, publish.published) == (3, 1)
    assert (_fires(name, "failed"), _fires(name, "published")) == (2, 1)
    last = REGISTRY.get_sample_value(
        "emotionviz_scheduler_last_success_timestamp_seconds", {"job": name}
    )
    assert last is not None and abs(last - time.time()) < 60
    due = REGISTRY.get_sample_value(
        "emotionviz_scheduler_next_fire_due_timestamp_seconds", {"job": name}
    )
    assert due == (FIRE + timedelta(days=1, seconds=MISFIRE_GRACE_S + 60)).timestamp()
    # Served: a late scheduler does not publish it again.
    assert not run_job(job, FireGuard(client, redis_namespace), now=FIRE + timedelta(minutes=4))
    assert publish.published == 1
    client.close()


def test_a_fire_one_scheduler_failed_is_published_by_another(
    redis_server_url: str, redis_namespace: str
) -> None:
    """Scheduler A's publish keeps failing until its window ends (one second left of
    the grace here); scheduler B, running late inside the grace, still publishes that
    fire. (Before: A's claim, taken before its failed publish, made B skip it.)"""
    client = redis.Redis.from_url(redis_server_url)
    failing = FlakyPublish(failures=1000)
    name = f"day-{uuid.uuid4().hex[:6]}"
    near_end = FIRE + timedelta(seconds=MISFIRE_GRACE_S - 1)
    assert not run_job(
        ScheduledJob(name, DAILY, failing),
        FireGuard(client, redis_namespace),
        now=near_end,
        retry_s=0.2,
    )
    assert failing.calls >= 2 and failing.published == 0
    assert _fires(name, "failed") == failing.calls
    working = FlakyPublish(failures=0)
    late = FIRE + timedelta(seconds=MISFIRE_GRACE_S - 0.5)
    assert run_job(ScheduledJob(name, DAILY, working), FireGuard(client, redis_namespace), now=late)
    assert working.published == 1
    client.close()


def test_two_schedulers_publish_a_flaky_fire_exactly_once(
    redis_server_url: str, redis_namespace: str
) -> None:
    client = redis.Redis.from_url(redis_server_url)
    publish = FlakyPublish(failures=1, seconds=0.2)
    job = ScheduledJob(f"day-{uuid.uuid4().hex[:6]}", DAILY, publish)
    results: list[bool] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                run_job(job, FireGuard(client, redis_namespace), now=FIRE, retry_s=0.05)
            )
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, True]
    assert publish.published == 1
    client.close()


def test_a_scheduler_that_died_mid_publish_is_taken_over(
    redis_server_url: str, redis_namespace: str
) -> None:
    client = redis.Redis.from_url(redis_server_url)
    name = f"day-{uuid.uuid4().hex[:6]}"
    dead = FireGuard(client, redis_namespace, lock_s=1)
    assert dead.claim(name, FIRE).value == "ours"  # and never publishes nor releases
    publish = FlakyPublish(failures=0)
    started = time.monotonic()
    assert run_job(
        ScheduledJob(name, DAILY, publish),
        FireGuard(client, redis_namespace),
        now=FIRE,
        retry_s=0.1,
    )
    assert publish.published == 1 and 0.8 < time.monotonic() - started < 10
    client.close()


def _users(engine: Engine, number: int) -> set[uuid.UUID]:
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "INSERT INTO users (email, hashed_password, name) "
                "SELECT 'u' || g || '@example.com', 'x', 'P' FROM generate_series(1, :n) g "
                "RETURNING id"
            ),
            {"n": number},
        )
        return {r.id for r in rows}


def _queued_recomputes(client: redis.Redis, namespace: str) -> list[AnalyticsRecompute]:
    keys = queue_keys(namespace, "analytics")
    bodies = client.hvals(keys.ready_bodies)
    return [AnalyticsRecompute.model_validate(json.loads(b)["args"][0]) for b in bodies]


def test_the_scheduled_recompute_fans_out_over_every_user_exactly_once(
    engine: Engine,
    broker: dramatiq.Broker,
    redis_server_url: str,
    redis_namespace: str,
) -> None:
    users = _users(engine, 3 * USER_BATCH + 123)
    with engine.begin() as conn:  # a few entries, so the recompute writes rows
        conn.execute(
            text(
                "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
                "SELECT id, 's', '{joy}', 0.5 FROM users ORDER BY id LIMIT 50"
            )
        )
    sessions = make_session_factory(engine)
    settings = Settings(_env_file=None, redis_namespace=redis_namespace)  # type: ignore[call-arg]
    jobs = {
        j.name: j for j in default_jobs(settings, Producer(broker), lambda: UnitOfWork(sessions))
    }
    client = redis.Redis.from_url(redis_server_url)
    assert run_job(jobs["analytics-day"], FireGuard(client, redis_namespace))
    messages = _queued_recomputes(client, redis_namespace)
    assert len(messages) > 1  # fanned out, not one serial message
    seen = [u for m in messages for u in m.user_ids or []]
    assert len(seen) == len(users) and set(seen) == users  # every user exactly once
    expected = recompute_messages("day")
    for m in messages:
        assert (m.period, m.period_start, m.period_end) == (
            expected.period,
            expected.period_start,
            expected.period_end,
        )
        assert m.user_ids and len(m.user_ids) <= USER_BATCH
        assert len({lane_of(u) for u in m.user_ids}) == 1  # one lane: its lock
    # Each batch is idempotent: a second delivery of every message writes nothing.
    factory = lambda: UnitOfWork(sessions)  # noqa: E731
    assert sum(recompute(factory, m).rows for m in messages) == 50
    assert sum(recompute(factory, m).rows for m in messages) == 0
    client.close()


def test_planning_pages_users_by_their_primary_key(engine: Engine) -> None:
    users = _users(engine, 1000)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE users"))
    sessions = make_session_factory(engine)
    template = recompute_messages("week")
    pages = list(plan_recompute(lambda: UnitOfWork(sessions), template, page=64))
    assert len(pages) == 16  # 1000 users, 64 a page
    seen = [u for page in pages for m in page for u in m.user_ids or []]
    assert len(seen) == 1000 and set(seen) == users
    with engine.connect() as conn:
        plan = conn.execute(
            text("EXPLAIN (FORMAT JSON) SELECT id FROM users WHERE id > :a ORDER BY id LIMIT 64"),
            {"a": min(users)},
        ).scalar_one()
    assert "Seq Scan" not in json.dumps(plan) and "users_pkey" in json.dumps(plan)


def test_a_scheduler_exports_its_fires_from_the_start(
    redis_server_url: str, redis_namespace: str
) -> None:
    """Each outcome's series exists at 0 before any fire (an alert's increase() misses
    a series' first count), and the next fire's due time is set."""
    client = redis.Redis.from_url(redis_server_url)
    name = f"day-{uuid.uuid4().hex[:6]}"
    build_scheduler(
        [ScheduledJob(name, DAILY, FlakyPublish(0))], FireGuard(client, redis_namespace)
    )
    for outcome in ("published", "failed", "skipped", "missed"):
        assert (
            REGISTRY.get_sample_value(
                "emotionviz_scheduler_fires_total", {"job": name, "outcome": outcome}
            )
            == 0
        )
    due = REGISTRY.get_sample_value(
        "emotionviz_scheduler_next_fire_due_timestamp_seconds", {"job": name}
    )
    assert due is not None and 0 < due - time.time() <= 86400 + MISFIRE_GRACE_S + 60
    client.close()
