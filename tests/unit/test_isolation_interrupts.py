"""The suspect lock survives Dramatiq's time limit: TimeLimitExceeded is raised
asynchronously in the worker thread, possibly while a suspect waits to run alone. A
count left behind by it would stop every later job of the process."""

from __future__ import annotations

import threading
import time

import pytest
from dramatiq.middleware.threading import raise_thread_exception
from dramatiq.middleware.time_limit import TimeLimitExceeded

from workers.services.isolation import SuspectLock

pytestmark = pytest.mark.unit


def _within(seconds: float, action: object) -> bool:
    """Whether ``action`` (a callable) finishes within ``seconds`` in another thread."""
    done = threading.Event()

    def run() -> None:
        action()  # type: ignore[operator]
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(seconds)


def test_a_suspect_interrupted_while_waiting_leaves_the_lock_usable() -> None:
    lock = SuspectLock()
    busy_in, busy_out = threading.Event(), threading.Event()

    def busy_job() -> None:
        with lock.ordinary():
            busy_in.set()
            busy_out.wait(10)

    busy = threading.Thread(target=busy_job, daemon=True)
    busy.start()
    assert busy_in.wait(5)
    caught: list[BaseException] = []

    def suspect_job() -> None:
        try:
            with lock.ordinary(), lock.alone(holding_ordinary=True):
                raise AssertionError("ran while a job was under way")
        except TimeLimitExceeded as exc:
            caught.append(exc)

    suspect = threading.Thread(target=suspect_job, daemon=True)
    suspect.start()
    deadline = time.monotonic() + 5
    while lock._writers_waiting == 0:  # waiting to run alone
        assert time.monotonic() < deadline
        time.sleep(0.01)
    raise_thread_exception(suspect.ident, TimeLimitExceeded)
    with lock._cond:  # wake it: the exception lands when its thread runs again
        lock._cond.notify_all()
    suspect.join(5)
    assert len(caught) == 1
    busy_out.set()
    busy.join(5)

    assert (lock._readers, lock._writers_waiting, lock._writer) == (0, 0, False)

    def ordinary_job() -> None:
        with lock.ordinary():
            pass

    def suspect_alone() -> None:
        with lock.ordinary(), lock.alone(holding_ordinary=True):
            pass

    assert _within(2, ordinary_job)
    assert _within(2, suspect_alone)
