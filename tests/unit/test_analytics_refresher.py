"""The worker's analytics refresher thread (workers/entrypoints/analytics_refresh.py): it
outlives failed passes, backs off after them, drains a backlog without waiting, and
stops at shutdown. The drain is a fake here (the real one runs against PostgreSQL in
tests/integration/test_analytics_follow_edits.py and, inside a real worker process,
tests/e2e/test_pipeline.py)."""

from __future__ import annotations

import threading
import time

import pytest

from workers.entrypoints import analytics_refresh
from workers.entrypoints.analytics_refresh import (
    MAX_BACKOFF_S,
    PASS_LIMIT,
    AnalyticsRefresher,
    backoff_s,
)


def test_backoff_doubles_from_the_interval_up_to_its_cap() -> None:
    assert backoff_s(1.0, 0) == 1.0
    assert [backoff_s(1.0, n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]
    assert backoff_s(1.0, 20) == MAX_BACKOFF_S


class ScriptedDrain:
    """Plays ``script`` (an exception to raise or a count to return), then returns 0
    and sets ``done``; records when each pass ran."""

    def __init__(self, script: list[int | Exception]) -> None:
        self.script = list(script)
        self.at: list[float] = []
        self.done = threading.Event()

    def __call__(self, limit: int) -> int:
        assert limit == PASS_LIMIT
        self.at.append(time.monotonic())
        if not self.script:
            self.done.set()
            return 0
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def _run(refresher: AnalyticsRefresher, drain: ScriptedDrain) -> None:
    refresher.after_worker_boot(None, None)
    assert drain.done.wait(10), "the refresher stopped before its script ended"
    refresher.before_worker_shutdown(None, None)
    assert refresher.thread is not None and not refresher.thread.is_alive()


def test_a_failed_pass_is_logged_and_retried_after_a_back_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings: list[dict[str, object]] = []
    monkeypatch.setattr(
        analytics_refresh.log, "warning", lambda event, **kw: warnings.append({"e": event, **kw})
    )
    drain = ScriptedDrain([RuntimeError("database down"), RuntimeError("still down"), 3])
    _run(AnalyticsRefresher(0.05, drain), drain)
    assert len(drain.at) == 4  # two failures, a pass that refreshed 3, an empty pass
    assert [w["failures_in_a_row"] for w in warnings] == [1, 2]
    assert warnings[0]["reason"] == "RuntimeError: database down"
    gaps = [b - a for a, b in zip(drain.at, drain.at[1:], strict=False)]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # 2 x then 4 x the interval after failures


def test_a_full_pass_starts_the_next_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analytics_refresh.log, "info", lambda *a, **kw: None)
    drain = ScriptedDrain([PASS_LIMIT, PASS_LIMIT, 5])
    _run(AnalyticsRefresher(1.0, drain), drain)
    gaps = [b - a for a, b in zip(drain.at, drain.at[1:], strict=False)]
    assert gaps[0] < 0.5 and gaps[1] < 0.5  # a backlog: no wait between full passes
    assert gaps[2] >= 1.0  # below the limit: the interval again


def test_zero_starts_no_thread() -> None:
    drain = ScriptedDrain([])
    refresher = AnalyticsRefresher(0, drain)
    refresher.after_worker_boot(None, None)
    assert refresher.thread is None
    refresher.before_worker_shutdown(None, None)
    assert drain.at == []
