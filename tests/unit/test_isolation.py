"""The suspect lock: ordinary jobs run together; a suspect waits for them, then runs
alone while new jobs wait."""

from __future__ import annotations

import threading
import time

import pytest

from workers.services.isolation import SuspectLock

pytestmark = pytest.mark.unit


def test_ordinary_jobs_run_together() -> None:
    lock, inside, both = SuspectLock(), [], threading.Barrier(2, timeout=5)

    def job() -> None:
        with lock.ordinary():
            inside.append(1)
            both.wait()  # would time out if the second could not enter

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert inside == [1, 1]


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
            time.sleep(0.2)
            events.append("suspect done")

    def later() -> None:
        with lock.ordinary():
            events.append("later runs")

    t1 = threading.Thread(target=first)
    t1.start()
    running.wait(5)
    t2 = threading.Thread(target=suspect)
    t2.start()
    time.sleep(0.1)  # the suspect now waits for the first job
    t3 = threading.Thread(target=later)
    t3.start()
    time.sleep(0.1)
    assert events == []  # neither the suspect nor the later job runs yet
    release_first.set()
    for t in (t1, t2, t3):
        t.join(5)
    assert events == ["first done", "suspect runs", "suspect done", "later runs"]
