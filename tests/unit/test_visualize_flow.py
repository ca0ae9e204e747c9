"""The entry.created use case with a fake unit of work and fake providers: the order of
steps, the analysis checkpoint, the lease guard and what a failure leaves behind. (The
real repositories are tested on PostgreSQL in tests/integration.)"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from PIL import Image

from db.repositories import ClaimedVisualization, EntryRow
from db.repositories.entry_pipeline import AnalysisCheckpoint
from domain.analysis import Analysis, AnalysisResult, EntrySnapshot, ImageResult
from domain.errors import LeaseHeldError, NotFoundError, OwnershipError, ProviderUnavailableError
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStyle
from workers.providers.local import LocalAnalysisProvider
from workers.services.visualize import Outcome, VisualizationService, VisualizeLimits

pytestmark = pytest.mark.unit

LIMITS = VisualizeLimits(lease_s=60, thumbnail_px=64, max_image_bytes=10**6, max_image_pixels=10**6)


@dataclass
class Row:
    entry_id: uuid.UUID
    user_id: uuid.UUID
    style: str
    status: str = "pending"
    lease: datetime | None = None
    analysis: dict[str, Any] | None = None
    image_url: str | None = None
    error_message: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class FakeDatabase:
    """What the repositories would read and write, as plain objects; a transaction's
    writes are applied at commit."""

    entries: dict[uuid.UUID, EntryRow] = field(default_factory=dict)
    rows: dict[uuid.UUID, Row] = field(default_factory=dict)
    analytics_refreshed: list[uuid.UUID] = field(default_factory=list)
    commits: int = 0


class FakeVisualizations:
    def __init__(self, db: FakeDatabase, pending: list[Any]) -> None:
        self.db, self.pending = db, pending

    def _held(self, claim: ClaimedVisualization) -> Row | None:
        row = next(r for r in self.db.rows.values() if r.id == claim.id)
        return row if row.status == "processing" and row.lease == claim.lease else None

    def unpool(self, entry_id: uuid.UUID) -> None:
        """As entry_pipeline.unpool: no fair pool here."""

    def claim_entry(
        self, entry_id: uuid.UUID, user_id: uuid.UUID, style: str | None, lease_s: int
    ) -> tuple[EntryRow | None, ClaimedVisualization | None]:
        # As entry_pipeline.claim_entry, less the lease's expiry: the row is created if
        # missing, then taken if pending (real PostgreSQL: tests/integration).
        entry = self.db.entries.get(entry_id)
        if entry is None or entry.user_id != user_id:
            return entry, None
        row = self.db.rows.setdefault(entry_id, Row(entry_id, user_id, style or "abstract"))
        if row.status != "pending":
            return entry, None
        row.status, row.lease = "processing", datetime.now(UTC)
        return entry, ClaimedVisualization(
            row.id, row.lease, row.style, row.analysis, row.image_url
        )

    def checkpoint_analysis(
        self,
        claim: ClaimedVisualization,
        *,
        yield_for: Any = None,
        paid_calls: Any = (),
        **values: Any,
    ) -> AnalysisCheckpoint:
        # No fair pool and no ledger here (real PostgreSQL: tests/integration).
        assert yield_for is None and not paid_calls
        row = self._held(claim)
        if row is not None:
            self.pending.append(lambda: setattr(row, "analysis", values["raw"]))
        return AnalysisCheckpoint(saved=row is not None, yielded=False)

    def save_image(self, claim: ClaimedVisualization, **values: Any) -> bool:
        row = self._held(claim)
        if row is not None:
            self.pending.append(lambda: setattr(row, "image_url", values["image_url"]))
        return row is not None

    def complete(
        self,
        claim: ClaimedVisualization,
        *,
        user_id: uuid.UUID,
        entry_moment: Any,
        paid_calls: Any = (),
        **image: Any,
    ) -> bool:
        assert not paid_calls  # no ledger here
        # The real one queues the analytics refresh in the same statement.
        self.pending.append(lambda: self.db.analytics_refreshed.append(user_id))
        row = self._held(claim)
        if row is not None:
            self.pending.append(lambda: setattr(row, "status", "completed"))
            if "image_url" in image:
                self.pending.append(lambda: setattr(row, "image_url", image["image_url"]))
        return row is not None

    def release(self, claim: ClaimedVisualization, reason: str, **_: Any) -> bool:
        row = self._held(claim)
        if row is not None:
            self.pending.append(lambda: (setattr(row, "status", "pending"), None))
            self.pending.append(lambda: setattr(row, "error_message", f"will retry: {reason}"))
        return row is not None

    def fail(self, entry_id: uuid.UUID, reason: str, lease: datetime | None = None) -> bool:
        row = self.db.rows[entry_id]
        # As the real one, less the lease's expiry: pending, or held under this lease.
        if not (row.status == "pending" or (row.status == "processing" and row.lease == lease)):
            return False
        self.pending.append(lambda: (setattr(row, "status", "failed"), None))
        row.error_message = reason
        return True

    def count_claim(self, claim: ClaimedVisualization, delta: int) -> bool:
        return self._held(claim) is not None

    def renew_leases(
        self, claims: list[ClaimedVisualization], lease_s: int
    ) -> set[tuple[uuid.UUID, datetime]]:
        return {(c.id, c.lease) for c in claims if self._held(c) is not None}

    def get_by_entry(self, entry_id: uuid.UUID) -> Any:
        row = self.db.rows.get(entry_id)
        if row is None:
            return None
        return type(
            "R",
            (),
            {
                "status": row.status,
                "error_message": row.error_message,
                "processing_started_at": row.lease,
            },
        )()


class FakeUnitOfWork:
    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self.pending: list[Any] = []
        self.entries = type("E", (), {"get": lambda _s, entry_id: db.entries.get(entry_id)})()
        self.visualizations = FakeVisualizations(db, self.pending)
        self.entry_pipeline = self.visualizations  # the per-entry statements, same rows
        self.autocommit = False

    def single_statement(self) -> FakeUnitOfWork:
        """As db/uow.py: each write commits by itself (commit() is not called)."""
        self.autocommit = True
        return self

    def __enter__(self) -> FakeUnitOfWork:
        self.pending.clear()
        self.autocommit = False
        return self

    def __exit__(self, *exc: object) -> None:
        if self.autocommit and self.pending:  # written already, whatever happened after
            self.commit()
        self.pending.clear()  # rolled back unless committed

    def commit(self) -> None:
        for apply in self.pending:
            apply()
        self.pending.clear()
        self.db.commits += 1


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 80, 40)).save(out, "PNG")
    return out.getvalue()


@dataclass
class FakeImages:
    name: str = "fake-images"
    errors: list[Exception] = field(default_factory=list)
    calls: int = 0

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return ImageResult(_png(), "image/png", {"model": "fake"})


@dataclass
class CountingAnalysis:
    name: str = "counting"
    calls: int = 0

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        self.calls += 1
        return LocalAnalysisProvider().analyse(entry, style)


@dataclass
class MemoryStore:
    files: dict[str, bytes] = field(default_factory=dict)

    def put(self, key: str, data: bytes, content_type: str) -> str:
        self.files[key] = data
        return f"mem://{key}"

    def get(self, key: str) -> bytes:
        return self.files[key]

    def delete(self, key: str) -> bool:
        return self.files.pop(key, None) is not None


@dataclass
class Rig:
    db: FakeDatabase
    analysis: CountingAnalysis
    images: FakeImages
    store: MemoryStore
    service: VisualizationService

    def entry(self) -> tuple[uuid.UUID, uuid.UUID]:
        entry_id, user_id = uuid.uuid4(), uuid.uuid4()
        snapshot = EntrySnapshot(str(entry_id), "A long day", ("joy",), Decimal("0.5"), None)
        self.db.entries[entry_id] = EntryRow(snapshot, user_id, datetime.now(UTC))
        return entry_id, user_id


@pytest.fixture
def rig() -> Rig:
    db = FakeDatabase()
    analysis, images, store = CountingAnalysis(), FakeImages(), MemoryStore()
    providers = type("P", (), {"analysis": analysis, "images": images, "store": store})()
    service = VisualizationService(lambda: FakeUnitOfWork(db), providers, LIMITS)  # type: ignore[arg-type]
    return Rig(db, analysis, images, store, service)


def test_an_entry_is_analysed_drawn_stored_and_completed(rig: Rig) -> None:
    entry_id, user_id = rig.entry()
    assert (
        rig.service.process(EntryCreated(entry_id=entry_id, user_id=user_id)) == Outcome.COMPLETED
    )
    row = rig.db.rows[entry_id]
    assert row.status == "completed" and row.analysis is not None
    assert sorted(rig.store.files) == [
        f"visualizations/{row.id}.png",
        f"visualizations/{row.id}_thumb.webp",
    ]
    assert rig.db.analytics_refreshed == [user_id]


def test_a_second_delivery_calls_nothing(rig: Rig) -> None:
    entry_id, user_id = rig.entry()
    message = EntryCreated(entry_id=entry_id, user_id=user_id)
    rig.service.process(message)
    assert rig.service.process(message) == Outcome.ALREADY_COMPLETED
    assert (rig.analysis.calls, rig.images.calls) == (1, 1)


def test_an_image_failure_keeps_the_analysis_and_a_retry_does_not_ask_again(rig: Rig) -> None:
    entry_id, user_id = rig.entry()
    message = EntryCreated(entry_id=entry_id, user_id=user_id)
    rig.images.errors.append(ProviderUnavailableError("503"))
    with pytest.raises(ProviderUnavailableError):
        rig.service.process(message)
    row = rig.db.rows[entry_id]
    assert row.status == "pending" and row.analysis is not None  # lease given back
    assert rig.service.process(message) == Outcome.COMPLETED
    assert (rig.analysis.calls, rig.images.calls) == (1, 2)


def test_a_row_held_by_another_worker_is_deferred(rig: Rig) -> None:
    entry_id, user_id = rig.entry()
    rig.db.rows[entry_id] = Row(entry_id, user_id, "abstract", "processing", datetime.now(UTC))
    with pytest.raises(LeaseHeldError) as raised:
        rig.service.process(EntryCreated(entry_id=entry_id, user_id=user_id))
    assert 1 <= (raised.value.retry_after_s or 0) <= LIMITS.lease_s
    assert rig.analysis.calls == 0


def test_a_lost_lease_writes_nothing_more(rig: Rig) -> None:
    entry_id, user_id = rig.entry()
    original = rig.analysis.analyse

    def reclaimed_meanwhile(entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        row = rig.db.rows[entry_id]
        row.lease = datetime.now(UTC)  # another worker took the row over
        return original(entry, style)

    rig.analysis.analyse = reclaimed_meanwhile  # type: ignore[method-assign]
    assert (
        rig.service.process(EntryCreated(entry_id=entry_id, user_id=user_id)) == Outcome.LEASE_LOST
    )
    assert rig.db.rows[entry_id].analysis is None and rig.images.calls == 0


def test_a_missing_or_foreign_entry_changes_no_row(rig: Rig) -> None:
    with pytest.raises(NotFoundError):
        rig.service.process(EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()))
    entry_id, _ = rig.entry()
    with pytest.raises(OwnershipError):
        rig.service.process(EntryCreated(entry_id=entry_id, user_id=uuid.uuid4()))
    assert rig.db.rows == {} and rig.db.commits == 0


def test_mark_failed_records_the_reason(rig: Rig) -> None:
    entry_id, user_id = rig.entry()
    rig.db.rows[entry_id] = Row(entry_id, user_id, "abstract")
    rig.service.mark_failed(entry_id, "the image model refused: SAFETY")
    row = rig.db.rows[entry_id]
    assert row.status == "failed" and row.error_message == "the image model refused: SAFETY"


class Interrupted(BaseException):
    """What Dramatiq's time limit raises in the worker thread (TimeLimitExceeded is a
    BaseException, not an Exception)."""


def test_a_job_interrupted_by_the_time_limit_gives_its_lease_back(rig: Rig) -> None:
    entry_id, user_id = rig.entry()
    rig.images.errors.append(Interrupted())  # type: ignore[arg-type]
    with pytest.raises(Interrupted):
        rig.service.process(EntryCreated(entry_id=entry_id, user_id=user_id))
    row = rig.db.rows[entry_id]
    # Not left processing until its lease runs out (then taken for a crash).
    assert row.status == "pending" and row.analysis is not None
    assert row.error_message == (
        "will retry: the job was interrupted (Interrupted) before it finished"
    )
    assert rig.service.leases.held() == []
    rig.service.mark_failed(entry_id, "the job took longer than the job time limit of 10 s")
    assert row.status == "failed"


def test_a_late_failure_leaves_a_row_held_live_by_another_worker(rig: Rig) -> None:
    entry_id, user_id = rig.entry()
    rig.db.rows[entry_id] = Row(entry_id, user_id, "abstract", "processing", datetime.now(UTC))
    with pytest.raises(LeaseHeldError):
        rig.service.process(EntryCreated(entry_id=entry_id, user_id=user_id))
    rig.service.mark_failed(entry_id, "gave up after 6 attempts; last error: 503")
    assert rig.db.rows[entry_id].status == "processing"


def test_an_interruption_that_lands_in_the_release_still_releases(rig: Rig) -> None:
    entry_id, user_id = rig.entry()
    rig.images.errors.append(ProviderUnavailableError("503"))
    fake = FakeVisualizations.release
    calls: list[int] = []

    def interrupted_once(self: FakeVisualizations, *args: Any, **kwargs: Any) -> bool:
        calls.append(1)
        if len(calls) == 1:
            raise Interrupted()  # the time limit fires while the lease is given back
        return fake(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(FakeVisualizations, "release", interrupted_once)
        with pytest.raises(Interrupted):
            rig.service.process(EntryCreated(entry_id=entry_id, user_id=user_id))
    assert len(calls) == 2 and rig.db.rows[entry_id].status == "pending"
