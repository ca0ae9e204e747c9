"""Each worker process's look at the paused queues' mirror (workers/messaging/
pause_sync.py): periodic, at once after a Redis failover this process sees, and a
failing look is retried rather than ending the thread."""

from __future__ import annotations

import threading

import pytest

from workers.messaging import failover
from workers.messaging.pause_sync import PauseSync

pytestmark = pytest.mark.unit


def _seen() -> failover.FailoverSeen:
    return failover.FailoverSeen("10.0.0.1:6379", "10.0.0.2:6379", 2, 0.0, 0.0)


def test_a_failover_makes_the_worker_compare_the_mirror_at_once() -> None:
    looked = threading.Event()
    sync = PauseSync(looked.set, every_s=3600)  # the period alone would not look now
    sync.after_worker_boot(None, None)
    try:
        assert not looked.wait(0.2)
        failover._tell_listeners(_seen())
        assert looked.wait(5), "no look after the failover"
    finally:
        sync.before_worker_shutdown(None, None)
        failover._listeners.remove(sync.look_now)


def test_looks_go_on_every_period_after_a_failing_one() -> None:
    calls: list[int] = []
    twice = threading.Event()

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the database is down")
        twice.set()

    sync = PauseSync(flaky, every_s=0.05)
    sync.after_worker_boot(None, None)
    try:
        assert twice.wait(5), "the failing look ended the thread"
    finally:
        sync.before_worker_shutdown(None, None)
        failover._listeners.remove(sync.look_now)
