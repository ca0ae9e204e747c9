"""The actors' failure policy on Dramatiq's StubBroker and a real Worker, with fake
services: reject, permanent failure, retry with the server's delay, plain retry, and
give-up. No PostgreSQL, no Redis."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Retries, TimeLimit

from domain.errors import (
    ContentBlockedError,
    LeaseHeldError,
    NotFoundError,
    ProviderUnavailableError,
)
from domain.messages import EntryCreated, MessageV1
from workers.entrypoints.actors import ActorDependencies, Actors, declare_actors
from workers.services.visualize import Outcome
from workers.settings import Settings

pytestmark = pytest.mark.unit

MAX_RETRIES = 2
TIME_LIMIT_MS = 300


@dataclass
class FakeVisualizations:
    """Raises the scripted errors in turn, then completes; records what it was asked."""

    script: list[Exception]
    calls: list[float] = field(default_factory=list)  # monotonic time of each attempt
    failed: list[str] = field(default_factory=list)
    overruns: int = 0  # the first attempts that run until the time limit stops them
    interrupted: list[BaseException] = field(default_factory=list)

    def process(
        self, message: EntryCreated, *, fair: bool = False, max_in_flight: int = 0
    ) -> Outcome:
        self.calls.append(time.monotonic())
        if self.overruns:
            self.overruns -= 1
            try:
                while True:  # a job that would run for ever: the time limit ends it
                    time.sleep(0.005)
            except BaseException as exc:
                self.interrupted.append(exc)
                raise
        if self.script:
            raise self.script.pop(0)
        return Outcome.COMPLETED

    def turn_taken(self) -> EntryCreated | None:
        return None  # always its own entry

    def mark_failed(self, entry_id: uuid.UUID, reason: str) -> None:
        self.failed.append(reason)


@dataclass
class FakePublisher:
    sent: list[tuple[MessageV1, int | None]] = field(default_factory=list)

    def publish(self, message: MessageV1, *, delay_ms: int | None = None) -> str:
        self.sent.append((message, delay_ms))
        return str(uuid.uuid4())

    def publish_many(self, messages: Any) -> list[str]:
        return [self.publish(m) for m in messages]


@dataclass
class Rig:
    broker: StubBroker
    actors: Actors
    service: FakeVisualizations
    publisher: FakePublisher
    counted: list[str]

    def run(self, payload: object) -> None:
        self.actors.entry_created.send(payload)
        worker = dramatiq.Worker(self.broker, worker_timeout=10, worker_threads=1)
        worker.start()
        try:
            self.broker.join(EntryCreated.queue_name, fail_fast=False, timeout=10_000)
        finally:
            worker.stop()

    @property
    def dead(self) -> list[Any]:
        return self.broker.dead_letters_by_queue[EntryCreated.queue_name]


@pytest.fixture
def rig() -> Iterator[Rig]:
    broker = StubBroker(
        middleware=[
            # Dramatiq's own time limit, short: it interrupts the worker thread.
            TimeLimit(time_limit=TIME_LIMIT_MS, interval=20),
            Retries(max_retries=MAX_RETRIES, min_backoff=5, max_backoff=20),
            CurrentMessage(),
        ]
    )
    broker.emit_after("process_boot")
    settings = Settings(
        _env_file=None,
        max_retries=MAX_RETRIES,
        min_backoff_ms=5,
        max_backoff_ms=20,
        job_time_limit_s=10,  # what the reason names (the broker's limit is shorter here)
    )  # type: ignore[call-arg]
    service = FakeVisualizations(script=[])
    publisher = FakePublisher()
    counted: list[str] = []
    deps = ActorDependencies(
        visualization=lambda: service,  # type: ignore[arg-type, return-value]
        intake=lambda: None,  # type: ignore[arg-type, return-value]
        recompute=lambda message: None,  # type: ignore[arg-type, return-value]
        reconcile=lambda: None,  # type: ignore[arg-type, return-value]
        collect_media_garbage=lambda: (0, 0),
        publisher=lambda: publisher,
        count=counted.append,
    )
    yield Rig(broker, declare_actors(broker, settings, deps), service, publisher, counted)
    broker.close()


def _payload() -> dict[str, str]:
    return EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()).to_payload()


def test_success_runs_once(rig: Rig) -> None:
    rig.run(_payload())
    assert len(rig.service.calls) == 1
    assert rig.dead == [] and rig.service.failed == [] and rig.counted == []


def test_invalid_message_is_rejected_without_touching_the_service(rig: Rig) -> None:
    rig.run({"entry_id": "not-a-uuid", "user_id": str(uuid.uuid4())})
    assert rig.service.calls == []
    assert rig.service.failed == []  # no row changed
    assert len(rig.dead) == 1
    assert rig.counted == ["rejected"]


def test_missing_row_is_rejected_at_once(rig: Rig) -> None:
    rig.service.script = [NotFoundError("entry does not exist")]
    rig.run(_payload())
    assert len(rig.service.calls) == 1  # no retry
    assert rig.service.failed == []
    assert len(rig.dead) == 1
    assert rig.counted == ["rejected"]


def test_permanent_failure_fails_the_row_and_dead_letters(rig: Rig) -> None:
    rig.service.script = [ContentBlockedError("the image model refused: SAFETY")]
    rig.run(_payload())
    assert len(rig.service.calls) == 1
    assert rig.service.failed == ["the image model refused: SAFETY"]
    assert len(rig.dead) == 1


def test_transient_failure_waits_the_servers_delay(rig: Rig) -> None:
    rig.service.script = [ProviderUnavailableError("429 quota", retry_after_s=0.3)]
    rig.run(_payload())
    first, second = rig.service.calls
    assert second - first >= 0.3  # the server's delay, not the 5-20 ms backoff
    assert rig.dead == [] and rig.service.failed == []
    assert rig.counted == ["retries"]


def test_unexpected_error_retries_with_backoff_then_succeeds(rig: Rig) -> None:
    rig.service.script = [RuntimeError("socket closed"), RuntimeError("socket closed")]
    rig.run(_payload())
    assert len(rig.service.calls) == 3
    assert rig.dead == [] and rig.service.failed == []
    assert rig.counted == ["retries", "retries"]


def test_gives_up_after_max_retries(rig: Rig) -> None:
    rig.service.script = [ProviderUnavailableError("503") for _ in range(MAX_RETRIES + 1)]
    rig.run(_payload())
    assert len(rig.service.calls) == MAX_RETRIES + 1
    assert rig.service.failed == [f"gave up after {MAX_RETRIES + 1} attempts; last error: 503"]
    assert len(rig.dead) == 1


def test_lease_held_elsewhere_defers_without_spending_a_retry(rig: Rig) -> None:
    rig.service.script = [LeaseHeldError("held", retry_after_s=42)]
    rig.run(_payload())
    assert len(rig.service.calls) == 1
    ((message, delay_ms),) = rig.publisher.sent
    assert isinstance(message, EntryCreated)
    assert 42_000 <= (delay_ms or 0) <= 43_000
    assert rig.dead == [] and rig.counted == []


def test_expected_retry_is_not_logged_as_an_unhandled_error(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.service.script = [ProviderUnavailableError("503 overloaded")]
    with caplog.at_level(logging.INFO, logger="dramatiq"):
        rig.run(_payload())
    assert len(rig.service.calls) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
    assert any("Retrying message" in r.getMessage() for r in caplog.records)


def test_a_job_over_the_time_limit_is_retried_then_failed_naming_the_limit(rig: Rig) -> None:
    # TimeLimitExceeded is a BaseException: it used to pass `except Exception`, so the
    # row was never failed (Dramatiq retried and dead-lettered the message in silence).
    rig.service.overruns = MAX_RETRIES + 1
    rig.run(_payload())
    assert len(rig.service.calls) == MAX_RETRIES + 1
    assert [type(e).__name__ for e in rig.service.interrupted] == ["TimeLimitExceeded"] * 3
    assert rig.service.failed == [
        f"gave up after {MAX_RETRIES + 1} attempts; last error: "
        "the job took longer than the job time limit of 10 s"
    ]
    assert len(rig.dead) == 1
    assert rig.counted == ["retries", "retries"]


def test_an_overrun_then_a_success_completes(rig: Rig) -> None:
    rig.service.overruns = 1
    rig.run(_payload())
    assert len(rig.service.calls) == 2
    assert rig.service.failed == [] and rig.dead == []
