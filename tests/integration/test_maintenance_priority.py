"""A reconcile waiting behind a backlog of images gets the next free thread: behind a
backlog it used to wait as long as the backlog did (lost work and dead leases with it).
A real Redis broker and a real Dramatiq worker with one thread."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import dramatiq
import pytest

from domain.messages import EntryCreated, MaintenanceReconcile
from workers.entrypoints.actors import ActorDependencies, declare_actors
from workers.services.reconcile import ReconcileReport
from workers.services.visualize import Outcome
from workers.settings import Settings

pytestmark = pytest.mark.integration
ENTRIES = 12


class SlowService:
    """Stands in for the visualization service: each entry takes 50 ms."""

    def __init__(self, ran: list[str]) -> None:
        self.ran = ran

    def process(
        self, message: EntryCreated, *, fair: bool = False, max_in_flight: int = 0
    ) -> Outcome:
        time.sleep(0.05)
        self.ran.append("entry")
        return Outcome.COMPLETED

    def turn_taken(self) -> EntryCreated | None:
        return None  # always its own entry

    def mark_failed(self, entry_id: uuid.UUID, reason: str) -> None:
        raise AssertionError(reason)


def test_a_reconcile_runs_before_a_backlog_of_images(
    broker: dramatiq.Broker, redis_namespace: str
) -> None:
    ran: list[str] = []
    finished = threading.Event()

    def reconcile() -> ReconcileReport:
        ran.append("reconcile")
        return ReconcileReport(0, 0, 0)

    deps = ActorDependencies(
        visualization=lambda: SlowService(ran),  # type: ignore[arg-type, return-value]
        intake=lambda: None,  # type: ignore[arg-type, return-value]
        recompute=lambda message: None,  # type: ignore[arg-type, return-value]
        reconcile=reconcile,
        collect_media_garbage=lambda: finished.set(),  # type: ignore[arg-type, return-value]
        publisher=lambda: None,  # type: ignore[arg-type, return-value]
        count=lambda name: None,
    )
    settings = Settings(_env_file=None, redis_namespace=redis_namespace)  # type: ignore[call-arg]
    actors = declare_actors(broker, settings, deps)
    payload: dict[str, Any] = EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()).to_payload()
    for _ in range(ENTRIES):
        actors.entry_created.send(payload)
    # The worker holds the whole backlog in memory (prefetch), as a busy worker does.
    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.queue_prefetch = ENTRIES
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:  # the backlog is being worked on
            time.sleep(0.005)
        actors.reconcile.send(MaintenanceReconcile().to_payload())
        assert finished.wait(30), f"the reconcile never ran: {ran}"
        broker.join(EntryCreated.queue_name, timeout=30_000)
    finally:
        worker.stop()
    assert ran.count("entry") == ENTRIES
    # Sent while the first image ran, it runs before the rest of the fetched backlog.
    assert ran.index("reconcile") <= 3, ran
