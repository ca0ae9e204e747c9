"""A real worker process, idle long enough for its consumers to back off to their 1 s
ceiling, takes a message published by our producer at once: every one of a few
samples well under what Dramatiq's sleep would cost (0.5 to 1 s, paid in part: before
wake-ups, the chance that six samples all came under the bound was about 1 %)."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from domain.messages import MaintenanceReconcile
from tests.e2e.conftest import Harness
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUIET_S = 3.0  # the consumers' backoff reaches its 1 s ceiling within about 2.5 s
SAMPLES = 6
BOUND_S = 0.3  # publish -> the job's log line, reconcile on an empty database included


def _done_times(harness: Harness) -> list[float]:
    """When each 'reconciled' line was written (the worker's own clock, this machine)."""
    found = []
    for line in harness.log_path.read_text(errors="replace").splitlines():
        if '"reconciled"' not in line:
            continue
        record = json.loads(line[line.index("{") :])
        if record.get("event") == "reconciled":
            found.append(datetime.fromisoformat(record["timestamp"]).timestamp())
    return found


def test_a_message_after_a_quiet_spell_is_taken_at_once(harness: Harness) -> None:
    broker = build_broker(
        Settings(_env_file=None, redis_namespace=harness.namespace),  # type: ignore[call-arg]
        harness.redis_url,
    )
    producer = Producer(broker)
    delays: list[float] = []
    try:
        for _ in range(SAMPLES):
            time.sleep(QUIET_S)
            before = len(_done_times(harness))
            published = time.time()
            producer.publish_many([MaintenanceReconcile()])  # the outbox's call
            deadline = time.monotonic() + 10
            while len(done := _done_times(harness)) == before:
                assert time.monotonic() < deadline, harness.log_path.read_text()[-3000:]
                time.sleep(0.05)
            delays.append(done[-1] - published)
    finally:
        broker.close()
    assert max(delays) < BOUND_S, f"publish -> done (s): {[round(d, 3) for d in delays]}"
