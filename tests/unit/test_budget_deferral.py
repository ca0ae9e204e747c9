"""A person over their daily budget (issue 23.3) on the actors' failure policy, with
Dramatiq's StubBroker and a real Worker (tests/unit/test_failure_policy.py's rig): the
work is retried after the budget's wait without spending a retry, so waits on several
days never dead-letter it, and an ordinary failure still has all its retries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Retries

from domain.errors import ProviderUnavailableError
from domain.ledger import BudgetExceededError, budget_exceeded
from domain.messages import EntryCreated
from tests.unit.test_failure_policy import (  # noqa: F401
    MAX_RETRIES,
    FakePublisher,
    FakeVisualizations,
    Rig,
    _payload,
    rig,
)
from workers.entrypoints.actors import ActorDependencies, declare_actors
from workers.services.visualize import Outcome
from workers.settings import Settings

pytestmark = pytest.mark.unit


def _over_budget() -> BudgetExceededError:
    return BudgetExceededError("daily budget of $1.00 reached", retry_after_s=0.05)


def test_budget_waits_spend_no_retry(rig: Rig) -> None:  # noqa: F811
    waits = MAX_RETRIES + 3  # more days over budget than the job has retries
    rig.service.script = [_over_budget() for _ in range(waits)]
    rig.run(_payload())
    assert len(rig.service.calls) == waits + 1  # then it ran
    assert rig.dead == [] and rig.service.failed == [] and rig.counted == []
    first, second = rig.service.calls[:2]
    assert second - first >= 0.05  # the budget's wait, not the backoff


def test_after_budget_waits_a_failure_still_has_all_its_retries(rig: Rig) -> None:  # noqa: F811
    rig.service.script = [
        _over_budget(),
        *(ProviderUnavailableError("503") for _ in range(MAX_RETRIES + 1)),
    ]
    rig.run(_payload())
    assert len(rig.service.calls) == 1 + MAX_RETRIES + 1
    assert rig.service.failed == [f"gave up after {MAX_RETRIES + 1} attempts; last error: 503"]


def test_the_wait_ends_at_the_next_utc_midnight_plus_jitter() -> None:
    now = datetime(2026, 12, 4, 22, 0, 30, tzinfo=UTC)
    error = budget_exceeded(Decimal("2"), Decimal("2.0412"), now, jitter_s=12.5)
    assert error.retry_after_s == 2 * 3600 - 30 + 12.5
    assert str(error) == "daily budget of $2.00 reached (spent $2.04 today); resumes at 00:00 UTC"
    tiny = budget_exceeded(Decimal("0.001"), Decimal("0.0042"), now)
    assert str(tiny).startswith("daily budget of $0.001 reached (spent $0.0042 today)")
    assert 2 * 3600 - 30 <= (tiny.retry_after_s or 0) <= 2 * 3600 - 30 + 300


@dataclass
class TakesBsEntryInTurn(FakeVisualizations):
    """Person A's token takes person B's entry in turn; B is over budget the first time."""

    turn: EntryCreated | None = None
    messages: list[EntryCreated] = field(default_factory=list)

    def process(
        self, message: EntryCreated, *, fair: bool = False, max_in_flight: int = 0
    ) -> Outcome:
        self.messages.append(message)
        self.turn = None
        if len(self.messages) == 1:
            self.turn = EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4())
            raise _over_budget()
        return Outcome.COMPLETED

    def turn_taken(self) -> EntryCreated | None:
        return self.turn


def test_a_budget_wait_in_a_fair_turn_spends_no_retry_even_with_max_retries_0() -> None:
    """turn_failed spent a retry on the wait, and with MAX_RETRIES=0 failed B's row."""
    broker = StubBroker(middleware=[Retries(max_retries=0), CurrentMessage()])
    broker.emit_after("process_boot")
    settings = Settings(_env_file=None, max_retries=0)  # type: ignore[call-arg]
    service = TakesBsEntryInTurn(script=[])
    counted: list[str] = []
    deps = ActorDependencies(
        visualization=lambda: service,  # type: ignore[arg-type, return-value]
        intake=lambda: None,  # type: ignore[arg-type, return-value]
        recompute=lambda message: None,  # type: ignore[arg-type, return-value]
        reconcile=lambda: None,  # type: ignore[arg-type, return-value]
        collect_media_garbage=lambda: (0, 0),
        publisher=lambda: FakePublisher(),
        count=counted.append,
    )
    actors = declare_actors(broker, settings, deps)
    a_token = EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4())
    actors.entry_created.send(a_token.to_payload())
    worker = dramatiq.Worker(broker, worker_timeout=10, worker_threads=1)
    worker.start()
    try:
        broker.join(EntryCreated.queue_name, fail_fast=False, timeout=10_000)
    finally:
        worker.stop()
        broker.close()
    first, again = service.messages  # B's entry came back after the wait, as its own
    assert first.entry_id == a_token.entry_id
    assert (again.entry_id, again.user_id) != (a_token.entry_id, a_token.user_id)
    assert service.failed == [] and counted == []
    assert broker.dead_letters_by_queue[EntryCreated.queue_name] == []
