"""The watchdog's judgement: which of a worker's threads are dead (the threads as
Dramatiq's boot hooks announce them)."""

from __future__ import annotations

import threading

import pytest

from workers.messaging.watchdog import Watchdog

pytestmark = pytest.mark.unit


class _ConsumerThread(threading.Thread):  # what the hook gets: a named thread
    def __init__(self, name: str, target: object) -> None:
        super().__init__(target=target, name=name, daemon=True)  # type: ignore[arg-type]


def test_dead_consumer_and_worker_threads_are_named() -> None:
    stop = threading.Event()
    consumers = [_ConsumerThread("visualizations", stop.wait), _ConsumerThread("intake", None)]
    workers = [
        threading.Thread(target=stop.wait, daemon=True),
        threading.Thread(target=lambda: None, name="gone-1"),
        threading.Thread(target=stop.wait, daemon=True),
    ]
    watchdog = Watchdog(interval_s=60)
    try:
        for thread in consumers:
            thread.start()
            watchdog.after_consumer_thread_boot(None, thread)
        for worker in workers:
            worker.start()
            watchdog.after_worker_thread_boot(None, worker)
        consumers[1].join()
        workers[1].join()
        assert watchdog.threads.dead() == ["consumer thread intake", "worker thread gone-1"]
        healthy = Watchdog(interval_s=60)
        healthy.after_consumer_thread_boot(None, consumers[0])
        healthy.after_worker_thread_boot(None, workers[0])
        assert healthy.threads.dead() == []
    finally:
        stop.set()
