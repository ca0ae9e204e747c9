"""The suspect lock: ordinary jobs run together; a suspect waits for them, then runs
alone while new jobs wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from workers.services.isolation import SuspectLock

pytestmark = pytest.mark.unit


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.001)


def _waiting_on(lock: SuspectLock) -> int:
    """Threads waiting for their turn (the lock counts them under its own lock, so a
    counted thread is blocked, not just not yet there)."""
    return lock.waiting


def test_ordinary_jobs_run_together() -> None:
    lock, met, both = SuspectLock(), [], threading.Barrier(2, timeout=5)

    def job() -> None:
        with lock.ordinary():
            both.wait()  # breaks (BrokenBarrierError) unless both are inside at once
            met.append(1)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert met == [1, 1], "the two ordinary jobs were never inside together"


def test_a_suspect_runs_alone_and_new_jobs_wait_for_it() -> None:
    lock, events = SuspectLock(), []
    running = threading.Event()
    release_first = threading.Event()

    def first() -> None:
        with lock.ordinary():
            running.set()
            release_first.wait(5)
            events.append("first done")

    def suspect() -> None:
        with lock.ordinary(), lock.alone(holding_ordinary=True):
            events.append("suspect runs")
            events.append("suspect done")

    def later() -> None:
        with lock.ordinary():
            events.append("later runs")

    t1 = threading.Thread(target=first)
    t1.start()
    running.wait(5)
    t2 = threading.Thread(target=suspect)
    t2.start()
    _wait_until(lambda: _waiting_on(lock) == 1, "the suspect waits for the first job")
    t3 = threading.Thread(target=later)
    t3.start()
    _wait_until(lambda: _waiting_on(lock) == 2 or bool(events), "the later job waits too")
    assert events == []  # neither the suspect nor the later job runs yet
    release_first.set()
    for t in (t1, t2, t3):
        t.join(5)
    assert events == ["first done", "suspect runs", "suspect done", "later runs"]
