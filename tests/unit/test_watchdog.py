"""The watchdog's judgement: which of a worker's threads are dead."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from workers.messaging.watchdog import dead_threads

pytestmark = pytest.mark.unit


@dataclass
class _Worker:  # the two attributes of dramatiq.Worker the watchdog reads
    consumers: dict[str, threading.Thread] = field(default_factory=dict)
    workers: list[threading.Thread] = field(default_factory=list)


def test_dead_consumer_and_worker_threads_are_named() -> None:
    stop = threading.Event()
    alive = [threading.Thread(target=stop.wait, daemon=True) for _ in range(3)]
    dead = [threading.Thread(target=lambda: None, name=f"gone-{i}") for i in range(2)]
    for thread in alive + dead:
        thread.start()
    for thread in dead:
        thread.join()
    try:
        worker = _Worker(
            {"visualizations": alive[0], "intake": dead[0]}, [alive[1], dead[1], alive[2]]
        )
        assert dead_threads(worker) == ["consumer of intake", "worker thread gone-1"]
        assert dead_threads(_Worker({"q": alive[0]}, alive[1:])) == []
    finally:
        stop.set()
