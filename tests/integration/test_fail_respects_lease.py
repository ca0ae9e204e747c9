"""Failing a row respects its lease, and a crash is blamed only on the rows that ran
(issue 20), on real PostgreSQL: the repository's compare-and-set and the service's
suspect path with the real per-entry statements."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.analysis import AnalysisResult, EntrySnapshot
from domain.errors import LeaseHeldError
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import insert_entry, insert_user, insert_visualization
from workers.providers.factory import Providers
from workers.providers.local import LocalAnalysisProvider, LocalImageProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.providers.storage import LocalImageStore
from workers.services.visualize import Outcome, VisualizationService, VisualizeLimits

pytestmark = pytest.mark.integration


def _entry(engine: Engine, situation: str = "A situation") -> tuple[uuid.UUID, uuid.UUID]:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        return insert_entry(conn, user_id, situation=situation), user_id


def _claim(engine: Engine, entry_id: uuid.UUID, user_id: uuid.UUID, lease_s: int = 60):  # type: ignore[no-untyped-def]
    with UnitOfWork(make_session_factory(engine)) as uow:
        uow.single_statement()
        _, claim = uow.entry_pipeline.claim_entry(entry_id, user_id, None, lease_s)
        uow.commit()
    assert claim is not None
    return claim


def _fail(engine: Engine, entry_id: uuid.UUID, lease: object = None) -> bool:
    with UnitOfWork(make_session_factory(engine)) as uow:
        if lease is None:  # the call as the old code knew it
            failed = uow.visualizations.fail(entry_id, "gave up")
        else:
            failed = uow.visualizations.fail(entry_id, "gave up", lease=lease)  # type: ignore[arg-type]
        uow.commit()
    return failed


def _row(engine: Engine, entry_id: uuid.UUID) -> tuple[str, int]:
    with engine.connect() as conn:
        status, claims = conn.execute(
            text("SELECT status, claim_count FROM visualizations WHERE entry_id = :e"),
            {"e": entry_id},
        ).one()
    return str(status), int(claims)


def _expire(engine: Engine, entry_id: uuid.UUID) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE visualizations SET lease_expires_at = now() - interval '1 s' "
                "WHERE entry_id = :e"
            ),
            {"e": entry_id},
        )


class GatedAnalysis(LocalAnalysisProvider):
    """Holds the analysis of an entry whose text has ``gate_marker`` until released."""

    def __init__(self, gate_marker: str) -> None:
        self.gate_marker = gate_marker
        self.entered = threading.Event()
        self.release = threading.Event()

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        if self.gate_marker in entry.situation:
            self.entered.set()
            assert self.release.wait(30)
        return super().analyse(entry, style)


def _service(engine: Engine, tmp_path: Path, analysis: object) -> VisualizationService:
    factory = make_session_factory(engine)
    providers = Providers(  # type: ignore[arg-type]
        analysis,
        LocalImageProvider(64),
        LocalImageStore(tmp_path, "http://m.test"),
        LocalIntakeProvider(),
    )
    return VisualizationService(
        lambda: UnitOfWork(factory), providers, VisualizeLimits(60, 64, 10_000_000, 10_000_000)
    )


# --- fail() and the lease ---------------------------------------------------------


def test_a_job_without_a_lease_cannot_fail_a_row_another_worker_holds_live(
    engine: Engine,
) -> None:
    entry_id, user_id = _entry(engine)
    live = _claim(engine, entry_id, user_id)  # another worker is finishing it
    assert not _fail(engine, entry_id)  # a late delivery gives up: no lease of its own
    assert _row(engine, entry_id)[0] == "processing"
    with UnitOfWork(make_session_factory(engine)) as uow:  # and its paid result is kept
        assert uow.entry_pipeline.complete(
            live, user_id=user_id, entry_moment=live.lease, image_url="file:///x.png"
        )
        uow.commit()
    assert _row(engine, entry_id)[0] == "completed"
    assert not _fail(engine, entry_id)  # a late failure never undoes success


def test_a_stale_lease_cannot_fail_the_row_its_new_holder_runs(engine: Engine) -> None:
    entry_id, user_id = _entry(engine)
    stale = _claim(engine, entry_id, user_id)
    _expire(engine, entry_id)
    _claim(engine, entry_id, user_id)  # taken over: the old job's lease is stale
    assert not _fail(engine, entry_id, lease=stale.lease)
    assert _row(engine, entry_id)[0] == "processing"


def test_its_own_lease_a_dead_lease_or_a_pending_row_may_be_failed(engine: Engine) -> None:
    own_entry, user_id = _entry(engine)
    own = _claim(engine, own_entry, user_id)
    assert _fail(engine, own_entry, lease=own.lease)  # e.g. a crash-looping row

    dead_entry, user_id = _entry(engine)
    _claim(engine, dead_entry, user_id)
    _expire(engine, dead_entry)  # its holder stopped renewing: nobody holds it live
    assert _fail(engine, dead_entry)

    pending_entry, user_id = _entry(engine)
    with engine.begin() as conn:
        insert_visualization(conn, pending_entry, user_id)
    assert _fail(engine, pending_entry)
    for entry_id in (own_entry, dead_entry, pending_entry):
        assert _row(engine, entry_id)[0] == "failed"


def test_the_service_fails_nothing_for_a_delivery_that_found_the_row_held(
    engine: Engine, tmp_path: Path
) -> None:
    entry_id, user_id = _entry(engine)
    _claim(engine, entry_id, user_id)
    service = _service(engine, tmp_path, LocalAnalysisProvider())
    with pytest.raises(LeaseHeldError):
        service.process(EntryCreated(entry_id=entry_id, user_id=user_id))
    service.mark_failed(entry_id, "gave up after 6 attempts; last error: 503")
    assert _row(engine, entry_id)[0] == "processing"


# --- a crash is blamed only on the rows that ran ----------------------------------


def test_a_suspect_waiting_to_run_alone_is_not_counted_until_it_runs(
    engine: Engine, tmp_path: Path
) -> None:
    """A suspect waits for this process's jobs under way before it runs alone. If one of
    them kills the process meanwhile, the suspect was not running: its claim must not
    count (it used to, and innocent rows reached MAX_CLAIMS beside a poison one)."""
    marker = "gate-" + uuid.uuid4().hex[:6]
    busy_entry, busy_user = _entry(engine, f"Situation {marker}")
    suspect_entry, suspect_user = _entry(engine)
    _claim(engine, suspect_entry, suspect_user)  # its worker died holding it
    _expire(engine, suspect_entry)
    analysis = GatedAnalysis(marker)
    service = _service(engine, tmp_path, analysis)
    outcomes: dict[str, Outcome] = {}

    def run(name: str, entry_id: uuid.UUID, user_id: uuid.UUID) -> None:
        outcomes[name] = service.process(EntryCreated(entry_id=entry_id, user_id=user_id))

    busy = threading.Thread(target=run, args=("busy", busy_entry, busy_user))
    busy.start()
    assert analysis.entered.wait(10)  # an ordinary job under way in this process
    suspect = threading.Thread(target=run, args=("suspect", suspect_entry, suspect_user))
    suspect.start()
    deadline = time.monotonic() + 10
    while _row(engine, suspect_entry) != ("processing", 1):
        # claimed (2), then uncounted while it waits: if the process died now, the
        # next claim would find one crash (the first), not two.
        assert time.monotonic() < deadline, _row(engine, suspect_entry)
        time.sleep(0.02)
    time.sleep(0.3)
    assert _row(engine, suspect_entry) == ("processing", 1)
    assert suspect.is_alive()  # still waiting for the busy job
    analysis.release.set()
    busy.join(10)
    suspect.join(10)
    assert outcomes == {"busy": Outcome.COMPLETED, "suspect": Outcome.COMPLETED}
    assert _row(engine, suspect_entry) == ("completed", 0)


def test_a_suspect_that_runs_is_counted(engine: Engine, tmp_path: Path) -> None:
    """Counted again when it runs: a poison entry still reaches MAX_CLAIMS."""
    marker = "gate-" + uuid.uuid4().hex[:6]
    entry_id, user_id = _entry(engine, f"Situation {marker}")
    _claim(engine, entry_id, user_id)
    _expire(engine, entry_id)
    analysis = GatedAnalysis(marker)
    service = _service(engine, tmp_path, analysis)
    job = threading.Thread(
        target=service.process, args=(EntryCreated(entry_id=entry_id, user_id=user_id),)
    )
    job.start()
    assert analysis.entered.wait(10)  # running alone, in the model call
    assert _row(engine, entry_id) == ("processing", 2)
    analysis.release.set()
    job.join(10)
    assert _row(engine, entry_id) == ("completed", 0)
