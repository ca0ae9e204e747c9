"""A job over JOB_TIME_LIMIT_S ends in a failed row that names the limit, its lease
given back, never taken for a crash (issue 20). Real worker process, the emulator's
latency over the limit.

Dramatiq interrupts the thread with TimeLimitExceeded, a BaseException: `except
Exception` used to miss it, the lease was not released, and the rows stayed
`processing` until their lease ran out (then blamed on crashing workers)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import DatabaseFactory
from tests.e2e.conftest import running_harness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIMIT_S = 10
JOBS = 4


def test_jobs_over_the_time_limit_fail_soon_naming_the_limit(
    database_factory: DatabaseFactory, redis_server_url: str, tmp_path: Path
) -> None:
    env = {
        "JOB_TIME_LIMIT_S": str(LIMIT_S),
        "MAX_RETRIES": "1",
        # The deployed defaults otherwise: the lease (a leaked one would hold the rows
        # for 60 s) and the retry backoff.
        "LEASE_S": "60",
        "MIN_BACKOFF_MS": "2000",
        "MAX_BACKOFF_MS": "300000",
        "REQUEST_TIMEOUT_S": "30",  # the HTTP timeout is not what stops these calls
    }
    with running_harness(database_factory, redis_server_url, tmp_path, env=env) as h:
        h.emulator.state.latency_analysis_s = 12.5  # model calls of 12-13 s
        h.emulator.state.latency_image_s = 12.5
        marker = "tl" + str(time.time_ns())[-8:]
        entries = [h.make_entry(f"{marker}-{i}") for i in range(JOBS)]
        published = time.monotonic()
        for entry_id, user_id in entries:
            h.publish(entry_id, user_id)
        took = []
        for entry_id, _ in entries:
            row = h.wait_for(entry_id, ("failed", "completed"), timeout=60 - took_so_far(published))
            took.append(round(time.monotonic() - published, 1))
            assert row["status"] == "failed"
            assert row["error_message"] == (
                "gave up after 2 attempts; last error: "
                f"the job took longer than the job time limit of {LIMIT_S} s"
            )
            assert row["lease_expires_at"] is None  # the lease was given back
            assert row["claim_count"] == 0  # never counted as a crash
        assert max(took) <= 60, took
        print(f"time to failed after publish (s): {took}")
        # One analysis call per attempt: retried once (MAX_RETRIES=1), then failed.
        assert h.calls(marker).get("analysis", 0) == JOBS * 2
        assert len(h.dead_letters()) == JOBS


def took_so_far(since: float) -> float:
    return min(59.0, time.monotonic() - since)
