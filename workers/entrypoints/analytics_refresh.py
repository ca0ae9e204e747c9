"""The analytics refresher in every worker process: a Dramatiq middleware that starts one
thread at worker boot, which drains analytics_refresh_queue every
ANALYTICS_REFRESH_EVERY_S seconds (workers/services/analytics.py:
drain_analytics_refresh_queue says what a pass does), and stops it at shutdown.

The queue gets a row per completed entry (the completion's own statement,
db/repositories/entry_pipeline.py) and per edited or deleted one (triggers on
emotion_entries), so a person's analytics follow their entries about a second later.
Refreshing in batches instead of in each completion costs a fraction: one statement per
period kind for every person in the batch, and a person's entries of one day once.

Several processes drain side by side (the queue's rows are taken FOR UPDATE SKIP
LOCKED). A pass that fails leaves its rows queued: the thread logs the reason, counts
it (emotionviz_analytics_refresh_failures_total) and tries again after a back-off; the
age of the oldest queued row shows in ``status`` and the metrics, so a refresher that
stopped everywhere is seen. The maintenance pass drains the queue too (every
reconcile), so analytics catch up even with no worker running.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from dramatiq.middleware import Middleware

from workers.logging import get_logger
from workers.observability.metrics import (
    count_analytics_refresh_failure,
    count_analytics_refreshed,
)

log = get_logger("emotionviz.analytics")

# Queued rows one pass takes at most (in transactions of DRAIN_BATCH): a pass that took
# this many starts the next at once, so a backlog drains without waiting.
PASS_LIMIT = 2_000
# The longest wait after failed passes (the wait doubles from ANALYTICS_REFRESH_EVERY_S).
MAX_BACKOFF_S = 30.0
# How long shutdown waits for a pass in flight; one cut short is rolled back and its
# rows are taken by the next pass anywhere.
JOIN_S = 2.0


def backoff_s(every_s: float, failures: int) -> float:
    """The wait before the next pass after ``failures`` failed passes in a row."""
    if failures == 0:
        return every_s
    return min(MAX_BACKOFF_S, every_s * 2.0**failures)


class AnalyticsRefresher(Middleware):
    """``drain(limit)`` refreshes up to ``limit`` queued rows and returns how many."""

    def __init__(self, every_s: float, drain: Callable[[int], int]) -> None:
        self.every_s = every_s
        self.drain = drain
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        if self.every_s <= 0:
            log.info("analytics refresher off (ANALYTICS_REFRESH_EVERY_S=0)")
            return
        self.thread = threading.Thread(target=self.run, name="analytics-refresh", daemon=True)
        self.thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(JOIN_S)

    def run(self) -> None:
        failures = 0
        wait = self.every_s
        while not self.stop.wait(wait):
            started = time.monotonic()
            try:
                refreshed = self.drain(PASS_LIMIT)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any failure
                failures += 1
                count_analytics_refresh_failure()
                wait = backoff_s(self.every_s, failures)
                log.warning(
                    "analytics refresh failed; the rows stay queued",
                    reason=f"{type(exc).__name__}: {exc}",
                    failures_in_a_row=failures,
                    retry_in_s=round(wait, 1),
                )
                continue
            if failures:
                log.info("analytics refresh works again", after_failures=failures)
                failures = 0
            count_analytics_refreshed(refreshed)
            if refreshed >= PASS_LIMIT:
                log.info(
                    "analytics refresh behind: draining a backlog",
                    refreshed=refreshed,
                    seconds=round(time.monotonic() - started, 3),
                )
                wait = 0.0
            else:
                wait = self.every_s
