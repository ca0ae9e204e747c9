"""The per-entry hot path's SQL (db/repositories/entry_pipeline.py, on the driver
connection): one statement reads the entry, creates the row if upstream did not, and
takes the lease; the completion saves the picture and queues the person's analytics
refresh in one round trip; a driver-mode unit wraps errors as the Session's does and never pools a dead
or autocommit connection. And the pool pings only connections that sat idle."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from db import engine as engine_module
from db.engine import make_engine, make_session_factory
from db.repositories import ClaimedVisualization
from db.uow import UnitOfWork
from domain.errors import DatabaseUnavailableError, DataRejectedError
from tests.integration.helpers import insert_entry, insert_user, insert_visualization
from workers.services.analytics import drain_analytics_refresh_queue

pytestmark = pytest.mark.integration
# Kept in order, each as written: not sorted, non-ASCII, quotes, an array literal's
# specials (the checkpoint sends them as JSON text: db/repositories/entry_pipeline.py).
INSIGHTS = ["zwei", "Ünïcode \"quoted\" 'single'", "{brace}, a,b", "NULL", "one"]


def _entry(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with engine.begin() as conn:
        user_id = insert_user(conn, f"claim-{uuid.uuid4().hex[:8]}@example.com")
        return insert_entry(conn, user_id, emotions=["joy"]), user_id


def test_claim_entry_creates_claims_once_and_returns_the_entry(engine: Engine) -> None:
    entry_id, user_id = _entry(engine)
    factory = make_session_factory(engine)
    with UnitOfWork(factory) as uow:
        entry, claim = uow.entry_pipeline.claim_entry(entry_id, user_id, "diagram", 60)
        again_entry, again = uow.entry_pipeline.claim_entry(entry_id, user_id, "metaphor", 60)
        uow.commit()
    assert entry is not None and entry.user_id == user_id
    assert entry.snapshot.entry_id == str(entry_id) and entry.snapshot.emotions == ("joy",)
    assert claim is not None and (claim.style, claim.claim_count) == ("diagram", 1)
    assert again_entry == entry and again is None  # held: not claimable twice
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, style, lease_expires_at > now() FROM visualizations")
        ).one()
    assert tuple(row) == ("processing", "diagram", True)


def test_claim_entry_takes_a_pending_row_made_upstream_and_keeps_its_style(
    engine: Engine,
) -> None:
    entry_id, user_id = _entry(engine)
    factory = make_session_factory(engine)
    with engine.begin() as conn:
        insert_visualization(conn, entry_id, user_id, "metaphor")
    with UnitOfWork(factory) as uow:
        _, claim = uow.entry_pipeline.claim_entry(entry_id, user_id, None, 60)
        uow.commit()
    assert claim is not None and claim.style == "metaphor"


def test_claim_entry_never_creates_a_row_for_someone_elses_or_a_missing_entry(
    engine: Engine,
) -> None:
    entry_id, _ = _entry(engine)
    factory = make_session_factory(engine)
    with UnitOfWork(factory) as uow:
        entry, claim = uow.entry_pipeline.claim_entry(entry_id, uuid.uuid4(), None, 60)
        missing = uow.entry_pipeline.claim_entry(uuid.uuid4(), uuid.uuid4(), None, 60)
        uow.commit()
    assert entry is not None and claim is None  # the caller reports whose it is
    assert missing == (None, None)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM visualizations")).scalar_one() == 0


def test_an_idle_pooled_connection_that_died_is_replaced(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "PING_IDLE_S", 0.2)
    pooled = make_engine(db_url, pool_size=1)
    try:
        with pooled.connect() as conn:
            first_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with pooled.connect() as conn:  # used a moment ago: handed out without a ping
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == first_pid
        admin = make_engine(db_url, null_pool=True)
        with admin.begin() as conn:  # the server dropped it (a restart, an idle timeout)
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
        admin.dispose()
        time.sleep(0.3)
        with pooled.connect() as conn:  # idle past PING_IDLE_S: pinged, found dead, replaced
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != first_pid
    finally:
        pooled.dispose()


def test_session_settings_hold_for_every_transaction_of_a_pooled_connection(
    db_url: str,
) -> None:
    pooled = make_engine(db_url, pool_size=1)
    try:
        for _ in range(3):  # the pool rolls back at every check-in
            with pooled.connect() as conn:
                assert conn.execute(text("SHOW TimeZone")).scalar_one() == "UTC"
                assert conn.execute(text("SHOW jit")).scalar_one() == "off"
    finally:
        pooled.dispose()


def test_a_single_statement_unit_commits_its_write_by_itself(engine: Engine) -> None:
    entry_id, user_id = _entry(engine)
    factory = make_session_factory(engine)
    with UnitOfWork(factory) as uow:
        uow.single_statement()
        _, claim = uow.entry_pipeline.claim_entry(entry_id, user_id, None, 60)
        # no commit(): the unit's exit rolls back, and there is nothing left to undo
    assert claim is not None
    with UnitOfWork(factory) as uow:  # the pooled connection is back to transactions
        uow.visualizations.fail(entry_id, "rolled back")
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM visualizations")).scalar_one()
    assert status == "processing"


def _claimed(engine: Engine) -> tuple[uuid.UUID, ClaimedVisualization]:
    entry_id, user_id = _entry(engine)
    with UnitOfWork(make_session_factory(engine)) as uow:
        _, claim = uow.entry_pipeline.claim_entry(entry_id, user_id, None, 60)
        uow.commit()
    assert claim is not None
    return user_id, claim


def test_completion_saves_the_picture_and_queues_the_analytics_refresh_in_one_unit(
    engine: Engine,
) -> None:
    user_id, claim = _claimed(engine)
    factory = make_session_factory(engine)
    with UnitOfWork(factory) as uow:
        assert uow.entry_pipeline.checkpoint_analysis(
            claim,
            summary="A calm day",
            insights=INSIGHTS,
            visual_elements={"colors": ["blue"]},
            raw={"analysis": {"summary": "A calm day"}},
        ).saved
        uow.commit()
    with UnitOfWork(factory) as uow:
        done = uow.entry_pipeline.complete(
            claim,
            user_id=user_id,
            entry_moment=datetime.now(UTC),
            image_url="/media/a.png",
            thumbnail_url="/media/a_thumb.webp",
            nanobanana_response={"model": "m", "bytes": 10},
        )
        uow.commit()
    assert done
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT status, summary, insights, visual_elements, image_url, thumbnail_url,"
                " nanobanana_response, lease_expires_at, claim_count FROM visualizations"
            )
        ).one()
        queued = conn.execute(text("SELECT user_id, day FROM analytics_refresh_queue")).all()
    assert tuple(row) == (
        "completed",
        "A calm day",
        INSIGHTS,
        {"colors": ["blue"]},
        "/media/a.png",
        "/media/a_thumb.webp",
        {"model": "m", "bytes": 10},
        None,
        0,
    )
    assert [tuple(q) for q in queued] == [(user_id, datetime.now(UTC).date())]
    # The worker's refresher drains it: the entry's day, week and month.
    assert drain_analytics_refresh_queue(lambda: UnitOfWork(factory), 10) == 1
    with engine.connect() as conn:
        kinds = conn.execute(
            text("SELECT count(*) FROM emotion_analytics WHERE user_id = :u AND total_entries = 1"),
            {"u": user_id},
        ).scalar_one()
    assert kinds == 3


def test_completion_keeps_a_checkpointed_picture_and_a_stale_holder_writes_nothing(
    engine: Engine,
) -> None:
    user_id, claim = _claimed(engine)
    with engine.begin() as conn:  # a picture saved by an earlier run
        conn.execute(text("UPDATE visualizations SET image_url = '/media/old.png'"))
    factory = make_session_factory(engine)
    stale = ClaimedVisualization(
        claim.id, claim.lease - timedelta(seconds=1), "abstract", None, None
    )
    with UnitOfWork(factory) as uow:
        assert not uow.entry_pipeline.complete(
            stale, user_id=user_id, entry_moment=datetime.now(UTC)
        )
    with UnitOfWork(factory) as uow:
        assert uow.entry_pipeline.complete(claim, user_id=user_id, entry_moment=datetime.now(UTC))
        uow.commit()
    with engine.connect() as conn:
        row = conn.execute(text("SELECT status, image_url FROM visualizations")).one()
        queued = conn.execute(text("SELECT count(*) FROM analytics_refresh_queue")).scalar_one()
    assert tuple(row) == ("completed", "/media/old.png")
    assert queued == 1  # the holder's completion only, not the stale one's


def test_a_single_statement_completion_commits_in_one_round_trip_or_not_at_all(
    engine: Engine, tmp_path: Path
) -> None:
    user_id, claim = _claimed(engine)
    factory = make_session_factory(engine)
    trace = tmp_path / "libpq.trace"
    with pytest.raises(DataRejectedError), UnitOfWork(factory) as uow:  # a NUL in JSON
        uow.single_statement()
        uow.entry_pipeline.complete(
            claim,
            user_id=user_id,
            entry_moment=datetime.now(UTC),
            nanobanana_response={"x": "\x00"},
        )
    with trace.open("w") as sink, UnitOfWork(factory) as uow:
        uow.single_statement()
        uow.driver.pgconn.trace(sink.fileno())
        assert uow.entry_pipeline.complete(claim, user_id=user_id, entry_moment=datetime.now(UTC))
        uow.driver.pgconn.untrace()
        # no commit(): the statement committed itself
    # Each round trip ends with the server's ReadyForQuery (libpq's trace: B ... ReadyForQuery).
    messages = [line.split("\t")[1:4] for line in trace.read_text().splitlines()]
    trips = [m for m in messages if m[:1] == ["B"] and m[2:3] == ["ReadyForQuery"]]
    assert len(trips) == 1  # the update and the queued refresh: one round trip
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM visualizations")).scalar_one()
        queued = conn.execute(
            text("SELECT count(*) FROM analytics_refresh_queue WHERE user_id = :u"),
            {"u": user_id},
        ).scalar_one()
    assert (status, queued) == ("completed", 1)  # the failed attempt queued nothing


def test_a_driver_unit_wraps_errors_and_gives_back_a_working_connection(
    engine: Engine, db_url: str
) -> None:
    _, claim = _claimed(engine)
    factory = make_session_factory(engine)
    with pytest.raises(DataRejectedError, match="refused the data"), UnitOfWork(factory) as uow:
        uow.entry_pipeline.checkpoint_analysis(
            claim, summary="nul \x00 inside", insights=[], visual_elements={}, raw={}
        )
    with UnitOfWork(factory) as uow:  # a transaction left open would be rolled back
        pid = uow.driver.execute("SELECT pg_backend_pid()").fetchone()
        assert uow.driver.autocommit is False
    assert pid is not None
    admin = make_engine(db_url, null_pool=True)
    with admin.begin() as conn:  # the server drops it (a restart)
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid[0]})
    admin.dispose()
    with pytest.raises(DatabaseUnavailableError), UnitOfWork(factory) as uow:
        uow.driver.execute("SELECT 1")
    with UnitOfWork(factory) as uow:  # the dead connection was thrown away, not pooled
        assert uow.driver.execute("SELECT 1").fetchone() == (1,)


def test_a_pool_with_no_connection_free_is_the_database_unavailable(db_url: str) -> None:
    """No overflow by default (db/engine.py pool_for_threads): a unit that waits out the
    pool's timeout fails as a transient DatabaseUnavailableError (its job is retried),
    not as an error nobody classified."""
    from sqlalchemy import create_engine

    from db.engine import normalise_url

    small = create_engine(normalise_url(db_url), pool_size=1, max_overflow=0, pool_timeout=0.2)
    factory = make_session_factory(small)
    try:
        with UnitOfWork(factory) as holder:
            holder.driver.execute("SELECT 1")  # the only connection, held
            with (
                pytest.raises(DatabaseUnavailableError, match="unavailable"),
                UnitOfWork(factory) as uow,
            ):
                uow.driver.execute("SELECT 1")
        with UnitOfWork(factory) as uow:  # given back: the next unit has it
            assert uow.driver.execute("SELECT 1").fetchone() == (1,)
    finally:
        small.dispose()


def test_a_unit_runs_on_a_session_or_on_the_driver_never_both(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with UnitOfWork(factory) as uow:
        uow.session.execute(text("SELECT 1"))
        with pytest.raises(RuntimeError, match="Session"):
            _ = uow.driver
    with UnitOfWork(factory) as uow:
        _ = uow.driver
        with pytest.raises(RuntimeError, match="driver"):
            _ = uow.session
