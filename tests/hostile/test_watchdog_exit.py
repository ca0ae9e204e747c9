"""A worker process whose consumer or worker thread dies exits non-zero (so that its
supervisor restarts it) instead of living on idle."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from tests.e2e.conftest import Harness
from workers.messaging.redis_keys import queue_keys

pytestmark = [pytest.mark.e2e]

EXIT_CODE = 70  # workers/messaging/watchdog.py


def _publish_killer(harness: Harness, message_id: str, options: dict[str, object]) -> None:
    redis_id = str(uuid.uuid4())
    envelope = {
        "queue_name": "visualizations",
        "actor_name": "entry.created",
        "args": [{"version": 1, "entry_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4())}],
        "kwargs": {},
        "options": {"redis_message_id": redis_id, **options},
        "message_id": message_id,
        "message_timestamp": int(time.time() * 1000),
    }
    keys = queue_keys(harness.namespace, "visualizations")
    harness.redis.hset(keys.ready_bodies, redis_id, json.dumps(envelope))
    harness.redis.rpush(keys.ready, redis_id)


def _exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


@pytest.mark.parametrize(
    ("kind", "options", "dead"),
    [
        ("kill-worker-thread", {}, "worker thread Thread-"),
        # Not the killer's own words ("consumer thread"): the watchdog's label.
        ("kill-consumer", {"eta": int(time.time() * 1000) + 60_000}, "consumer thread Thread-"),
    ],
)
def test_a_dead_thread_makes_the_worker_exit_non_zero(
    harness: Harness, kind: str, options: dict[str, object], dead: str
) -> None:
    proc = harness.start_worker(threads=2, extra_modules=["tests.hostile.thread_killer"])
    _publish_killer(harness, f"{kind}-{uuid.uuid4()}", options)
    code = _exit_code(proc, timeout=20)
    log = harness.log_path.read_text(errors="replace")
    assert code == EXIT_CODE, f"exit code {code}\n{log[-3000:]}"
    assert "a worker thread is dead; stopping the process" in log and dead in log
