"""A person over their daily budget (issue 23.3) on the actors' failure policy, with
Dramatiq's StubBroker and a real Worker (tests/unit/test_failure_policy.py's rig): the
work is retried after the budget's wait without spending a retry, so waits on several
days never dead-letter it, and an ordinary failure still has all its retries."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.errors import ProviderUnavailableError
from domain.ledger import BudgetExceededError, budget_exceeded
from tests.unit.test_failure_policy import MAX_RETRIES, Rig, _payload, rig  # noqa: F401

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
