"""An entry's paid-call rows ride with its own writes (workers/services/ledger.py:
``holding``), on real PostgreSQL: a completed job writes its ledger rows in the round
trips of its analysis checkpoint and its completion (three units of work in all, not
five); a job that fails after a call still writes that call's row, once; a write that
fails leaves its rows to be written at the job's end, never twice."""

from __future__ import annotations

import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import structlog
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.repositories.ledger import ledger_of
from db.uow import UnitOfWork
from domain.analysis import Analysis, EntrySnapshot, ImageResult
from domain.errors import InvalidImageError
from domain.ledger import Attempt, CallOwner, price_table
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import insert_entry, insert_user
from workers.providers.factory import Providers
from workers.providers.instrumented import CountedAnalysis, CountedImages
from workers.providers.local import LocalAnalysisProvider, LocalImageProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.providers.paid_calls import report
from workers.providers.storage import LocalImageStore
from workers.services.ledger import PaidCallLedger
from workers.services.visualize import Outcome, VisualizationService, VisualizeLimits

pytestmark = pytest.mark.integration

PRICES = price_table({"local": {"input_per_m": 1.0, "per_image": 0.04}})


class _CountedUnits:
    """The units of work opened, by everyone sharing this factory."""

    def __init__(self, engine: Engine) -> None:
        self.factory, self.opened = make_session_factory(engine), 0

    def __call__(self) -> UnitOfWork:
        self.opened += 1
        return UnitOfWork(self.factory)


class _Garbage:
    """An image model that is paid for an answer that is no picture."""

    name = "garbage"

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        report(Attempt("local", input_tokens=10, image=True))
        return ImageResult(data=b"not an image", mime_type="image/png", raw_response={})


def _service(
    units: _CountedUnits, tmp_path: Path, images: object | None = None
) -> tuple[VisualizationService, PaidCallLedger]:
    ledger = PaidCallLedger(units, PRICES, None)
    providers = Providers(
        CountedAnalysis(LocalAnalysisProvider(), "local", ledger),
        CountedImages(images or LocalImageProvider(size_px=64), "local", ledger),  # type: ignore[arg-type]
        LocalImageStore(tmp_path, "http://m.test"),
        LocalIntakeProvider(),
    )
    limits = VisualizeLimits(60, 32, 10_000_000, 10_000_000)
    return VisualizationService(units, providers, limits, ledger=ledger), ledger


def _entry(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with engine.begin() as conn:
        user = insert_user(conn)
        return user, insert_entry(conn, user)


def _calls(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT user_id, entry_id, kind FROM model_calls ORDER BY id"))
        return [tuple(r) for r in rows]


def _process(service: VisualizationService, user: uuid.UUID, entry: uuid.UUID) -> Outcome:
    structlog.contextvars.bind_contextvars(user_id=str(user), entry_id=str(entry))  # middleware
    try:
        return service.process(EntryCreated(entry_id=entry, user_id=user))
    finally:
        structlog.contextvars.clear_contextvars()


def test_a_completed_jobs_rows_ride_with_its_checkpoint_and_completion(
    engine: Engine, tmp_path: Path
) -> None:
    units = _CountedUnits(engine)
    service, _ = _service(units, tmp_path)
    user, entry = _entry(engine)
    assert _process(service, user, entry) is Outcome.COMPLETED
    assert _calls(engine) == [(user, entry, "analysis"), (user, entry, "image")]
    # The claim, the checkpoint (with the analysis's row), the completion (with the
    # image's): a unit of work of its own per row would make five.
    assert units.opened == 3


def test_a_call_whose_job_fails_afterwards_is_written_once_at_the_jobs_end(
    engine: Engine, tmp_path: Path
) -> None:
    units = _CountedUnits(engine)
    service, _ = _service(units, tmp_path, images=_Garbage())
    user, entry = _entry(engine)
    with pytest.raises(InvalidImageError):
        _process(service, user, entry)
    # The analysis rode with its checkpoint; the refused picture's call, carried by no
    # write, was written when the job ended.
    assert _calls(engine) == [(user, entry, "analysis"), (user, entry, "image")]


def test_rows_a_failed_write_carried_are_written_at_the_end_never_twice(engine: Engine) -> None:
    units = _CountedUnits(engine)
    ledger = PaidCallLedger(units, PRICES, None)
    with engine.begin() as conn:
        user = insert_user(conn)
    owner = CallOwner(user_id=user, entry_id=uuid.uuid4())
    with ledger.holding():
        ledger.record("analysis", owner, Attempt("local", input_tokens=1000))
        assert _calls(engine) == []  # held: nothing written yet
        with pytest.raises(RuntimeError), ledger.riding() as calls:
            assert [c.kind for c in calls] == ["analysis"]
            raise RuntimeError("the write failed")
        ledger.record("image", owner, Attempt("local", image=True))
        with ledger.riding() as calls, units() as uow:  # this write carries both
            uow.single_statement()
            ledger_of(uow).record_all(calls)
        with ledger.riding() as calls:
            assert calls == []  # nothing left waiting
    assert [c[2] for c in _calls(engine)] == ["analysis", "image"]
    with engine.connect() as conn:
        cost = conn.execute(text("SELECT sum(cost_usd) FROM model_calls")).scalar_one()
    assert cost == Decimal("0.041000")


def test_outside_a_holding_block_a_row_is_written_at_once(engine: Engine) -> None:
    ledger = PaidCallLedger(_CountedUnits(engine), PRICES, None)
    ledger.record("image", CallOwner(), Attempt("local", image=True))
    assert _calls(engine) == [(None, None, "image")]


def test_a_failed_attempts_row_is_written_at_once_even_inside_a_holding_block(
    engine: Engine,
) -> None:
    """A failed attempt may be followed by another call (a repair, a retry): its row is
    not held, so a thread never holds a row while a call is in flight (a kill -9 cuts
    at most one row per thread: scripts/chaos.py's bound)."""
    ledger = PaidCallLedger(_CountedUnits(engine), PRICES, None)
    with ledger.holding():
        ledger.record("analysis", CallOwner(), Attempt("local", outcome="invalid_output"))
        assert _calls(engine) == [(None, None, "analysis")]
        ledger.record("analysis", CallOwner(), Attempt("local", input_tokens=5))
        assert len(_calls(engine)) == 1  # the used answer's row waits
    assert len(_calls(engine)) == 2


class _Interrupt(BaseException):
    """As Dramatiq's time limit: raised into the thread, no Exception."""


def test_an_interruption_after_the_carrying_write_never_writes_a_row_twice(
    engine: Engine,
) -> None:
    """psycopg's pipeline commits at its Sync even when its block raised: an
    interruption that lands after the write may find the rows committed, so they count
    as carried (lost at worst, as a cut call's row, never written twice)."""
    units = _CountedUnits(engine)
    ledger = PaidCallLedger(units, PRICES, None)
    with ledger.holding():
        ledger.record("image", CallOwner(), Attempt("local", image=True))
        with pytest.raises(_Interrupt), ledger.riding() as calls, units() as uow:
            uow.single_statement()
            ledger_of(uow).record_all(calls)  # committed (autocommit)
            raise _Interrupt
    assert _calls(engine) == [(None, None, "image")]


def test_rows_an_interruption_keeps_from_being_written_are_counted(engine: Engine) -> None:
    from prometheus_client import REGISTRY

    name, labels = "emotionviz_paid_calls_unrecorded_total", {"model": "local"}
    before = REGISTRY.get_sample_value(name, labels) or 0.0

    def interrupted() -> UnitOfWork:
        raise _Interrupt

    ledger = PaidCallLedger(interrupted, PRICES, None)
    with pytest.raises(_Interrupt), ledger.holding():
        ledger.record("analysis", CallOwner(), Attempt("local", input_tokens=5))
        ledger.record("image", CallOwner(), Attempt("local", image=True))
    assert REGISTRY.get_sample_value(name, labels) == before + 2
