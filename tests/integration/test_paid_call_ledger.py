"""The paid-call ledger's service on real PostgreSQL (issue 23.3): a row per reported
attempt with its estimated cost, whose work it was, and the daily budget: spend since
00:00 UTC (yesterday's does not count), the wait until the next midnight, the per-process
cache of a person's spend."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import structlog
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.repositories.ledger import ledger_of
from db.uow import UnitOfWork
from domain.analysis import EntrySnapshot
from domain.errors import DatabaseUnavailableError
from domain.ledger import (
    Attempt,
    BudgetExceededError,
    CallOwner,
    next_utc_midnight,
    price_table,
)
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import insert_user
from workers.providers.instrumented import CountedAnalysis
from workers.providers.local import LocalAnalysisProvider
from workers.services.ledger import PaidCallLedger

pytestmark = pytest.mark.integration

PRICES = price_table(
    {
        "text-model": {"input_per_m": 1.0, "output_per_m": 10.0},
        "image-model": {"input_per_m": 1.0, "per_image": 0.04},
    }
)


def _ledger(engine: Engine, budget: str | None, cache_s: float = 0.0) -> PaidCallLedger:
    factory = make_session_factory(engine)
    return PaidCallLedger(
        lambda: UnitOfWork(factory),
        PRICES,
        None if budget is None else Decimal(budget),
        cache_s=cache_s,
    )


def _person(engine: Engine) -> uuid.UUID:
    """A person who exists (a row naming one who does not is recorded without them)."""
    with engine.begin() as conn:
        return insert_user(conn)


def _rows(engine: Engine) -> list[dict[str, object]]:
    with engine.connect() as conn:
        return [
            dict(r) for r in conn.execute(text("SELECT * FROM model_calls ORDER BY id")).mappings()
        ]


def test_each_attempt_is_a_row_with_its_owner_tokens_outcome_and_cost(engine: Engine) -> None:
    ledger = _ledger(engine, None)
    owner = CallOwner(user_id=_person(engine), entry_id=uuid.uuid4())
    assert ledger.record(
        "analysis", owner, Attempt("text-model", input_tokens=1000, output_tokens=200)
    ) == Decimal("0.003000")
    ledger.record("analysis", owner, Attempt("text-model", outcome="server_error"))
    assert ledger.record(
        "image", owner, Attempt("image-model", input_tokens=500, output_tokens=1290, image=True)
    ) == Decimal("0.040500")
    rows = _rows(engine)
    assert [(r["kind"], r["outcome"], r["cost_usd"]) for r in rows] == [
        ("analysis", "ok", Decimal("0.003000")),
        ("analysis", "server_error", Decimal("0")),
        ("image", "ok", Decimal("0.040500")),
    ]
    assert {(r["user_id"], r["entry_id"]) for r in rows} == {(owner.user_id, owner.entry_id)}
    assert rows[2]["image"] is True and rows[1]["input_tokens"] is None


def test_the_budget_counts_todays_spend_only_and_waits_until_midnight(engine: Engine) -> None:
    ledger = _ledger(engine, "0.05")
    person = CallOwner(user_id=_person(engine))
    other = CallOwner(user_id=_person(engine))
    expensive = Attempt("image-model", image=True)  # $0.04
    ledger.record("image", person, expensive)
    with engine.begin() as conn:  # yesterday's calls (UTC) do not count today
        conn.execute(text("UPDATE model_calls SET at = at - interval '24 hours'"))
    ledger.record("image", person, expensive)
    ledger.check_budget(person)  # $0.04 today < $0.05
    ledger.record("image", person, expensive)
    ledger.record("image", other, expensive)
    with pytest.raises(BudgetExceededError) as waited:
        ledger.check_budget(person)  # $0.08 today
    ledger.check_budget(other)  # another person's spend is theirs
    ledger.check_budget(CallOwner())  # work of nobody known: not limited
    assert str(waited.value) == (
        "daily budget of $0.05 reached (spent $0.08 today); resumes at 00:00 UTC"
    )
    now = datetime.now(UTC)
    resumes = now + timedelta(seconds=waited.value.retry_after_s or 0.0)
    # The next UTC day, plus up to 5 minutes' jitter (a second for this test's own time).
    midnight = next_utc_midnight(now)
    assert midnight - timedelta(seconds=1) <= resumes <= midnight + timedelta(seconds=300)


def test_a_persons_spend_is_read_once_per_cache_period_plus_what_this_process_spent(
    engine: Engine,
) -> None:
    ledger = _ledger(engine, "0.05", cache_s=3600)
    person = CallOwner(user_id=_person(engine))
    ledger.check_budget(person)  # reads $0, cached
    with engine.begin() as conn:  # another process's spend, unseen until the cache ends
        conn.execute(
            text(
                "INSERT INTO model_calls (user_id, model, kind, outcome, cost_usd, at) "
                "VALUES (:u, 'image-model', 'image', 'ok', 1, now())"
            ),
            {"u": person.user_id},
        )
    ledger.check_budget(person)
    ledger.record("image", person, Attempt("image-model", image=True))
    ledger.record("image", person, Attempt("image-model", image=True))  # this process: $0.08
    with pytest.raises(BudgetExceededError):
        ledger.check_budget(person)


def test_a_wrapped_provider_checks_the_budget_then_records_each_attempt(engine: Engine) -> None:
    ledger = PaidCallLedger(
        lambda: UnitOfWork(make_session_factory(engine)),
        price_table({"local": {"input_per_m": 1_000_000}}),  # $1 a token: over at once
        Decimal("0.50"),
        cache_s=0,
    )
    provider = CountedAnalysis(LocalAnalysisProvider(), "local", ledger)
    entry = EntrySnapshot(str(uuid.uuid4()), "a long day at work", ("joy",), Decimal("0.5"), None)
    user = _person(engine)
    # What the worker's log context binds from the message (workers/messaging/middleware.py)
    structlog.contextvars.bind_contextvars(user_id=str(user), entry_id="not-a-uuid")
    try:
        provider.analyse(entry, VisualizationStyle.ABSTRACT)
        with pytest.raises(BudgetExceededError):
            provider.analyse(entry, VisualizationStyle.ABSTRACT)
    finally:
        structlog.contextvars.clear_contextvars()
    (row,) = _rows(engine)  # the refused call was not made
    assert (row["user_id"], str(row["entry_id"]), row["model"]) == (user, entry.entry_id, "local")
    assert Decimal(str(row["cost_usd"])) >= 1
    with UnitOfWork(make_session_factory(engine)) as uow:
        assert ledger_of(uow).spent_since(user, datetime.now(UTC) - timedelta(hours=1)) >= 1


def test_a_call_of_a_person_erased_meanwhile_keeps_its_cost_but_names_nobody(
    engine: Engine,
) -> None:
    """model_calls has no FK: a job's call that ends after its person's erase committed
    must not write a row naming them (the erase already deleted their rows)."""
    ledger = _ledger(engine, None)
    kept, erased = _person(engine), _person(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": erased})
    attempt = Attempt("image-model", image=True)
    ledger.record("image", CallOwner(user_id=erased, entry_id=uuid.uuid4()), attempt)
    ledger.record("image", CallOwner(user_id=kept, entry_id=uuid.uuid4()), attempt)
    ledger.record("image", CallOwner(entry_id=uuid.uuid4()), attempt)  # nobody known
    rows = _rows(engine)
    assert [r["cost_usd"] for r in rows] == [Decimal("0.040000")] * 3  # the money counted
    assert (rows[0]["user_id"], rows[0]["entry_id"], rows[0]["intake_session_id"]) == (
        None,
        None,
        None,
    )
    assert rows[1]["user_id"] == kept and rows[1]["entry_id"] is not None
    assert rows[2]["user_id"] is None and rows[2]["entry_id"] is not None


def test_an_attempt_the_ledger_cannot_write_is_counted(engine: Engine) -> None:
    """The write's failure was a warning only: now a counter too, by model."""
    from prometheus_client import REGISTRY

    def unreachable() -> UnitOfWork:
        raise DatabaseUnavailableError("database unavailable")

    def refused() -> UnitOfWork:
        raise RuntimeError("the insert was refused")

    name, labels = "emotionviz_paid_calls_unrecorded_total", {"model": "text-model"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0
    for factory in (unreachable, refused):
        ledger = PaidCallLedger(factory, PRICES, None)
        cost = ledger.record("analysis", CallOwner(), Attempt("text-model", input_tokens=1000))
        assert cost == Decimal("0.001000")  # the call's cost still counts for the providers
    assert REGISTRY.get_sample_value(name, labels) == before + 2
    # A written row is not counted.
    _ledger(engine, None).record("analysis", CallOwner(), Attempt("text-model"))
    assert REGISTRY.get_sample_value(name, labels) == before + 2
    assert len(_rows(engine)) == 1
