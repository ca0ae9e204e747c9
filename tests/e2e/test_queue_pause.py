"""Pausing a queue (issue 24.3) with real worker processes: a paused queue takes no
message while another queue keeps going; the pause survives a worker restart, a
Redis that lost its mirror and a stale mirror; ``resume`` drains it. No sleep orders anything: each step
waits for what the worker says or does (its log, a queue's stored bodies)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest

from domain.messages import AnalyticsRecompute, EntryCreated
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness
from workers.messaging.redis_keys import paused, queue_keys

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENTRIES = 3


@pytest.fixture(scope="module")
def harness(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    folder = tmp_path_factory.mktemp("pause")
    with running_harness(database_factory, redis_server_url, folder, threads=4) as h:
        yield h


def _cli(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**os.environ, **h.env, "EMOTIONVIZ_OPERATOR": "pause-tester"},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path.cwd(),
    )


def _until(condition: Callable[[], bool], what: str, h: Harness, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}\n{h.log_path.read_text(errors='replace')[-3000:]}")


def _holds(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """``condition`` stays true for ``seconds`` (watched, not slept through): an idle
    consumer looks at its queue at least once a second, so two seconds cover two looks."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert condition(), what
        time.sleep(0.05)


def _paused_lines(h: Harness) -> int:
    count = 0
    for line in h.log_path.read_text(errors="replace").splitlines():
        if "queue paused: taking no message" in line and '"visualizations"' in line:
            count += 1
    return count


def _analytics_runs(h: Harness) -> None:
    """Publish a recompute and wait until a worker took, ran and acknowledged it."""
    h.publish_message(AnalyticsRecompute(period="day", period_start=date(2026, 1, 5)))
    bodies = queue_keys(h.namespace, "analytics").ready_bodies
    _until(lambda: h.redis.hlen(bodies) == 0, "analytics stopped while visualizations paused", h)


def test_a_paused_queue_takes_nothing_the_others_go_on_and_resume_drains(harness: Harness) -> None:
    h = harness
    paused_cmd = _cli(
        h, "queue", "pause", "visualizations", "--reason", "provider outage", "--json"
    )
    assert paused_cmd.returncode == 0, paused_cmd.stderr
    assert json.loads(paused_cmd.stdout)["paused_by"] == "pause-tester"
    _until(lambda: _paused_lines(h) > 0, "no worker saw the pause", h)

    # A mirror present but stale (a promoted replica without the last write, Redis
    # restarted from an older snapshot): the worker's sync rewrites it within its period
    # (SYNC_EVERY_S); done while the queue is empty, so the stale moment takes nothing.
    key = paused(h.namespace)
    with h.redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(key, "~mirrored", "1")
        pipe.execute()
    assert not h.redis.hexists(key, "visualizations")
    _until(lambda: h.redis.hexists(key, "visualizations"), "the stale mirror not rewritten", h)
    assert "mirror in Redis differed from the database" in h.log_path.read_text(errors="replace")

    entries = [h.make_entry(f"pause-{uuid.uuid4().hex[:6]}") for _ in range(ENTRIES)]
    for entry_id, user_id in entries:
        h.publish(entry_id, user_id)
    ready = queue_keys(h.namespace, "visualizations").ready
    seen = _paused_lines(h)
    # Unpaused, the idle worker would take them within its 1 s backoff: it takes none
    # over two of them, while another queue runs meanwhile.
    _holds(lambda: h.redis.llen(ready) == ENTRIES, 2.0, "a paused queue gave a message")
    _analytics_runs(h)
    assert h.redis.llen(ready) == ENTRIES
    assert all(h.visualization(e) is None for e, _ in entries)

    # A worker restart, with the Redis mirror lost meanwhile: still paused.
    (worker,) = h.workers
    h.stop_worker(worker)
    h.redis.delete(paused(h.namespace))
    h.start_worker(4)
    _until(lambda: _paused_lines(h) > seen, "the restarted worker did not see the pause", h)
    _analytics_runs(h)
    assert h.redis.llen(ready) == ENTRIES

    # The mirror lost while the worker runs (a flushed Redis): rebuilt, still paused.
    h.redis.delete(paused(h.namespace))
    _until(lambda: h.redis.exists(paused(h.namespace)) == 1, "mirror not rebuilt", h)
    assert h.redis.hexists(paused(h.namespace), "visualizations")
    _analytics_runs(h)
    assert h.redis.llen(ready) == ENTRIES

    listed = _cli(h, "queue", "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert row["queue"] == "visualizations" and row["reason"] == "provider outage"

    resumed = _cli(h, "queue", "resume", "visualizations")
    assert resumed.returncode == 0, resumed.stderr
    for entry_id, _ in entries:
        assert h.wait_for(entry_id)["status"] == "completed"

    trail = json.loads(_cli(h, "audit", "--json").stdout)
    actions = [(row["action"], row["target"], row["operator"]) for row in trail]
    assert ("queue.pause", "visualizations", "pause-tester") in actions
    assert ("queue.resume", "visualizations", "pause-tester") in actions


def test_a_paused_queue_takes_nothing_on_rabbitmq_and_resume_drains(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from tests.rabbitmq_support import rabbitmq_vhost, ready_count
    from workers.messaging.producer import Producer
    from workers.messaging.rabbitmq import SafeRabbitmqBroker

    folder = tmp_path_factory.mktemp("pause-rabbitmq")
    with (
        rabbitmq_vhost("pause") as url,
        running_harness(
            database_factory, redis_server_url, folder, env={"BROKER_URL": url}, threads=2
        ) as h,
    ):
        broker = SafeRabbitmqBroker(url=url)
        try:
            assert _cli(h, "queue", "pause", "visualizations").returncode == 0
            _until(lambda: _paused_lines(h) > 0, "no RabbitMQ consumer saw the pause", h)
            entries = [h.make_entry(f"pause-{uuid.uuid4().hex[:6]}") for _ in range(2)]
            producer = Producer(broker)
            for entry_id, user_id in entries:
                producer.publish(EntryCreated(entry_id=entry_id, user_id=user_id))
            _holds(
                lambda: ready_count(url, "visualizations") == 2,
                2.0,
                "a paused RabbitMQ queue gave a message",
            )
            assert _cli(h, "queue", "resume", "visualizations").returncode == 0
            for entry_id, _ in entries:
                assert h.wait_for(entry_id)["status"] == "completed"
        finally:
            broker.close()
