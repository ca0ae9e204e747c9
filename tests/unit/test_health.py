"""Worker health reports: a dead consumer or worker thread, or a process that stopped
reporting, makes /healthz fail."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from workers.observability.health import (
    STALE_AFTER_S,
    HealthReporter,
    count_threads,
    read_health,
)

pytestmark = pytest.mark.unit


def _thread(alive: bool, stop: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=stop.wait if alive else (lambda: None), daemon=True)
    thread.start()
    if not alive:
        thread.join()
    return thread


def _booted(directory: Path, stop: threading.Event, *, dead_workers: int = 0) -> HealthReporter:
    """A reporter told of two consumer threads and 1 + dead_workers worker threads, as
    Dramatiq's boot hooks tell it."""
    reporter = HealthReporter(directory)
    for _ in range(2):
        reporter.after_consumer_thread_boot(None, _thread(True, stop))
    reporter.after_worker_thread_boot(None, _thread(True, stop))
    for _ in range(dead_workers):
        reporter.after_worker_thread_boot(None, _thread(False, stop))
    return reporter


def _report(directory: Path, reporter: HealthReporter) -> None:
    reporter.after_worker_boot(None, None)
    deadline = time.monotonic() + 5
    while not list(directory.glob("health-*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    reporter._stop.set()


def test_all_threads_alive_is_healthy(tmp_path: Path) -> None:
    stop = threading.Event()
    try:
        _report(tmp_path, _booted(tmp_path, stop))
    finally:
        stop.set()
    healthy, reports = read_health(tmp_path)
    assert healthy and reports[0]["workers_alive"] == 1 and reports[0]["consumers"] == 2


def test_a_dead_worker_thread_is_unhealthy(tmp_path: Path) -> None:
    stop = threading.Event()
    try:
        reporter = _booted(tmp_path, stop, dead_workers=1)
        counts = count_threads(reporter.consumers, reporter.workers)
        assert (counts.workers_alive, counts.workers, counts.ok) == (1, 2, False)
        _report(tmp_path, reporter)
    finally:
        stop.set()
    healthy, reports = read_health(tmp_path)
    assert not healthy
    assert reports[0]["problem"] == "a consumer or worker thread is dead"


def test_the_reporter_counts_the_threads_a_real_dramatiq_worker_boots(tmp_path: Path) -> None:
    """Dramatiq's own Worker announces its threads through the public hooks the
    reporter listens to: a queue's consumer and its delay queue's, and each worker
    thread."""
    broker = StubBroker()  # type: ignore[no-untyped-call]
    reporter = HealthReporter(tmp_path)
    broker.add_middleware(reporter)

    @dramatiq.actor(actor_name="health.noop", queue_name="health", broker=broker)
    def noop() -> None:
        pass

    worker = dramatiq.Worker(broker, worker_threads=3, worker_timeout=100)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        counts = count_threads(reporter.consumers, reporter.workers)
        while (counts.consumers, counts.workers) != (2, 3) and time.monotonic() < deadline:
            time.sleep(0.02)
            counts = count_threads(reporter.consumers, reporter.workers)
    finally:
        reporter._stop.set()
        worker.stop()
        broker.close()
    assert counts.ok and (counts.consumers_alive, counts.workers_alive) == (2, 3)
    assert all(label.startswith("consumer thread ") for label in reporter.consumers.labels())


def test_a_silent_process_is_unhealthy(tmp_path: Path) -> None:
    (tmp_path / "health-1.json").write_text(json.dumps({"pid": 1, "at": 1000.0, "ok": True}))
    healthy, reports = read_health(tmp_path, now=1000.0 + STALE_AFTER_S + 1)
    assert not healthy and "no report for" in reports[0]["problem"]


def test_no_process_at_all_is_unhealthy(tmp_path: Path) -> None:
    assert read_health(tmp_path) == (False, [])
