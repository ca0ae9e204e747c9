"""Whose paid calls a job's are, on real PostgreSQL with the real service and the
wrapped local providers (issue 23.3 review): a fair token that takes another person's
entry charges that person and checks their budget; a person erased while their job runs
is named by no ledger row (the cost is kept) and leaves no picture on disk."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import dramatiq
import pytest
import structlog
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.analysis import Analysis, EntrySnapshot, ImageResult
from domain.ledger import BudgetExceededError, price_table
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import insert_entry, insert_user
from workers.messaging.producer import Producer
from workers.providers.factory import Providers
from workers.providers.instrumented import CountedAnalysis, CountedImages
from workers.providers.local import LocalAnalysisProvider, LocalImageProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.providers.storage import LocalImageStore
from workers.services.ledger import PaidCallLedger
from workers.services.visualize import Outcome, VisualizationService, VisualizeLimits

pytestmark = pytest.mark.integration
LEASE_S = 60
# The local providers' calls priced: $0.001 a token, $0.50 a picture.
PRICES = price_table({"local": {"input_per_m": 1000, "output_per_m": 1000, "per_image": 0.5}})


@pytest.fixture
def uow_factory(engine: Engine, broker: dramatiq.Broker) -> Callable[[], UnitOfWork]:
    factory = make_session_factory(engine)
    producer = Producer(broker)
    return lambda: UnitOfWork(factory, producer)


@pytest.fixture(autouse=True)
def _clean_log_context() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()


def _service(
    uow_factory: Callable[[], UnitOfWork],
    tmp_path: Path,
    budget: str | None,
    images: LocalImageProvider | None = None,
) -> VisualizationService:
    ledger = PaidCallLedger(uow_factory, PRICES, None if budget is None else Decimal(budget), 0)
    providers = Providers(
        CountedAnalysis(LocalAnalysisProvider(), "local", ledger),
        CountedImages(images or LocalImageProvider(size_px=64), "local", ledger),
        LocalImageStore(tmp_path, "http://m.test"),
        LocalIntakeProvider(),
    )
    return VisualizationService(
        uow_factory, providers, VisualizeLimits(LEASE_S, 32, 10_000_000, 10_000_000)
    )


def _person(engine: Engine, entries: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    with engine.begin() as conn:
        user = insert_user(conn)
        return user, [insert_entry(conn, user) for _ in range(entries)]


def _publish(factory: Callable[[], UnitOfWork], user: uuid.UUID, entries: list[uuid.UUID]) -> None:
    with factory() as uow:
        for entry in entries:
            uow.publish(EntryCreated(entry_id=entry, user_id=user))
        uow.commit()


def _calls(engine: Engine) -> list[tuple[uuid.UUID | None, uuid.UUID | None, str, Decimal]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT user_id, entry_id, kind, cost_usd FROM model_calls ORDER BY id")
        ).all()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def _as_the_worker(message: EntryCreated) -> None:
    """What the worker's middleware binds from the message (its person and entry)."""
    structlog.contextvars.bind_contextvars(
        user_id=str(message.user_id), entry_id=str(message.entry_id)
    )


def _a_token_takes_bs_entry(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> tuple[EntryCreated, uuid.UUID, uuid.UUID]:
    """A has two entries, B one; A's first job runs, so A's second message is a token
    that takes B's entry (B has nothing running): test_fair_dispatch's first case."""
    a, a_entries = _person(engine, 2)
    b, [b_entry] = _person(engine, 1)
    _publish(uow_factory, a, a_entries)
    _publish(uow_factory, b, [b_entry])
    with uow_factory() as uow:
        uow.single_statement()
        first = uow.entry_pipeline.fair_claim(a_entries[0], a, None, LEASE_S, 0)
    assert first.taken is not None and first.taken[0].snapshot.entry_id == str(a_entries[0])
    return EntryCreated(entry_id=a_entries[1], user_id=a), b, b_entry


def test_a_token_running_another_persons_entry_charges_that_person(
    engine: Engine, uow_factory: Callable[[], UnitOfWork], tmp_path: Path
) -> None:
    token, b, b_entry = _a_token_takes_bs_entry(engine, uow_factory)
    service = _service(uow_factory, tmp_path, budget=None)
    _as_the_worker(token)
    assert service.process(token, fair=True) is Outcome.COMPLETED
    turn = service.turn_taken()
    assert turn is not None and turn.entry_id == b_entry
    calls = _calls(engine)
    assert [(user, entry, kind) for user, entry, kind, _ in calls] == [
        (b, b_entry, "analysis"),
        (b, b_entry, "image"),
    ]


def test_a_token_running_another_persons_entry_checks_that_persons_budget(
    engine: Engine, uow_factory: Callable[[], UnitOfWork], tmp_path: Path
) -> None:
    token, b, b_entry = _a_token_takes_bs_entry(engine, uow_factory)
    with engine.begin() as conn:  # B spent their day's $1 already; A spent nothing
        conn.execute(
            text(
                "INSERT INTO model_calls (user_id, model, kind, outcome, cost_usd) "
                "VALUES (:u, 'local', 'image', 'ok', 1)"
            ),
            {"u": b},
        )
    service = _service(uow_factory, tmp_path, budget="1.00")
    _as_the_worker(token)
    with pytest.raises(BudgetExceededError):
        service.process(token, fair=True)
    turn = service.turn_taken()
    assert turn is not None and turn.entry_id == b_entry
    assert len(_calls(engine)) == 1  # B's own row: no call was made for B's entry
    with engine.connect() as conn:  # released to wait for the next day, not failed
        status, reason = conn.execute(
            text("SELECT status, error_message FROM visualizations WHERE entry_id = :e"),
            {"e": b_entry},
        ).one()
    assert status == "pending" and reason.startswith("will retry: daily budget of $1.00")


class ErasedWhileDrawing(LocalImageProvider):
    """The person is erased (their rows deleted, committed) while the picture is drawn."""

    def __init__(self, engine: Engine, user: uuid.UUID) -> None:
        super().__init__(size_px=64)
        self.engine, self.user = engine, user

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": self.user})
        return super().draw(entry, analysis, style)


def test_a_person_erased_while_their_job_runs_leaves_no_named_row_and_no_picture(
    engine: Engine, uow_factory: Callable[[], UnitOfWork], tmp_path: Path
) -> None:
    user, [entry] = _person(engine, 1)
    _publish(uow_factory, user, [entry])
    service = _service(uow_factory, tmp_path, budget=None, images=ErasedWhileDrawing(engine, user))
    message = EntryCreated(entry_id=entry, user_id=user)
    _as_the_worker(message)
    assert service.process(message) is Outcome.LEASE_LOST
    calls = _calls(engine)
    # The analysis's row was written before the erase (the erase deletes such rows; here
    # the person's row is deleted alone, so it stays); the picture's, after it.
    assert [(u, e, kind) for u, e, kind, _ in calls] == [
        (user, entry, "analysis"),
        (None, None, "image"),
    ]
    assert calls[1][3] >= Decimal("0.5")  # the picture's cost is kept
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing left on disk


def test_a_lease_taken_over_keeps_the_rows_picture(
    engine: Engine, uow_factory: Callable[[], UnitOfWork], tmp_path: Path
) -> None:
    """The cleanup is for a deleted row only: a row whose lease another worker took over
    still exists, and its keys are that worker's too."""
    user, [entry] = _person(engine, 1)
    _publish(uow_factory, user, [entry])

    class LeaseTakenOver(LocalImageProvider):
        def draw(
            self, entry_: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
        ) -> ImageResult:
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE visualizations SET processing_started_at = now() + "
                        "interval '1 second' WHERE entry_id = :e"
                    ),
                    {"e": entry},
                )
            return super().draw(entry_, analysis, style)

    service = _service(uow_factory, tmp_path, budget=None, images=LeaseTakenOver(size_px=64))
    message = EntryCreated(entry_id=entry, user_id=user)
    _as_the_worker(message)
    assert service.process(message) is Outcome.LEASE_LOST
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 2  # picture, thumbnail


def test_a_context_naming_another_entry_charges_nobody() -> None:
    """Were a job to run an entry its log context does not name, the bound person is
    another entry's: the call names no person rather than the wrong one."""
    from workers.providers.paid_calls import current_owner

    person, bound_entry, other_entry = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    structlog.contextvars.bind_contextvars(user_id=str(person), entry_id=str(bound_entry))
    assert current_owner(str(bound_entry)).user_id == person
    assert current_owner().entry_id == bound_entry
    owner = current_owner(str(other_entry))
    assert (owner.user_id, owner.entry_id) == (None, other_entry)
