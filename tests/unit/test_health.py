"""Worker health reports: a dead consumer or worker thread, or a process that stopped
reporting, makes /healthz fail."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from workers.observability.health import (
    STALE_AFTER_S,
    HealthReporter,
    count_threads,
    read_health,
)

pytestmark = pytest.mark.unit


def _thread(alive: bool) -> threading.Thread:
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    if not alive:
        stop.set()
        thread.join()
    else:
        thread.stop = stop  # type: ignore[attr-defined]
    return thread


def _worker(*, dead_workers: int = 0) -> SimpleNamespace:
    return SimpleNamespace(
        consumers={"q": _thread(True), "q.DQ": _thread(True)},
        workers=[_thread(True), *(_thread(False) for _ in range(dead_workers))],
    )


def _report(directory: Path, worker: SimpleNamespace) -> None:
    reporter = HealthReporter(directory)
    reporter.after_worker_boot(None, worker)
    deadline = time.monotonic() + 5
    while not list(directory.glob("health-*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    reporter._stop.set()


def test_all_threads_alive_is_healthy(tmp_path: Path) -> None:
    _report(tmp_path, _worker())
    healthy, reports = read_health(tmp_path)
    assert healthy and reports[0]["workers_alive"] == 1 and reports[0]["consumers"] == 2


def test_a_dead_worker_thread_is_unhealthy(tmp_path: Path) -> None:
    worker = _worker(dead_workers=1)
    assert not count_threads(worker).ok
    _report(tmp_path, worker)
    healthy, reports = read_health(tmp_path)
    assert not healthy
    assert reports[0]["problem"] == "a consumer or worker thread is dead"


def test_a_silent_process_is_unhealthy(tmp_path: Path) -> None:
    (tmp_path / "health-1.json").write_text(json.dumps({"pid": 1, "at": 1000.0, "ok": True}))
    healthy, reports = read_health(tmp_path, now=1000.0 + STALE_AFTER_S + 1)
    assert not healthy and "no report for" in reports[0]["problem"]


def test_no_process_at_all_is_unhealthy(tmp_path: Path) -> None:
    assert read_health(tmp_path) == (False, [])
