"""The per-entry hot path's SQL: one statement reads the entry, creates the row if
upstream did not, and takes the lease; and the pool pings only connections that sat
idle (a dead one is replaced without failing the transaction)."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import Engine, text

from db import engine as engine_module
from db.engine import make_engine, make_session_factory
from db.uow import UnitOfWork
from tests.integration.helpers import insert_entry, insert_user

pytestmark = pytest.mark.integration


def _entry(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with engine.begin() as conn:
        user_id = insert_user(conn, f"claim-{uuid.uuid4().hex[:8]}@example.com")
        return insert_entry(conn, user_id, emotions=["joy"]), user_id


def test_claim_entry_creates_claims_once_and_returns_the_entry(engine: Engine) -> None:
    entry_id, user_id = _entry(engine)
    factory = make_session_factory(engine)
    with UnitOfWork(factory) as uow:
        entry, claim = uow.visualizations.claim_entry(entry_id, user_id, "diagram", 60)
        again_entry, again = uow.visualizations.claim_entry(entry_id, user_id, "metaphor", 60)
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
    with UnitOfWork(factory) as uow:
        uow.visualizations.ensure_row(entry_id, user_id, "metaphor")
        uow.commit()
    with UnitOfWork(factory) as uow:
        _, claim = uow.visualizations.claim_entry(entry_id, user_id, None, 60)
        uow.commit()
    assert claim is not None and claim.style == "metaphor"


def test_claim_entry_never_creates_a_row_for_someone_elses_or_a_missing_entry(
    engine: Engine,
) -> None:
    entry_id, _ = _entry(engine)
    factory = make_session_factory(engine)
    with UnitOfWork(factory) as uow:
        entry, claim = uow.visualizations.claim_entry(entry_id, uuid.uuid4(), None, 60)
        missing = uow.visualizations.claim_entry(uuid.uuid4(), uuid.uuid4(), None, 60)
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
        _, claim = uow.visualizations.claim_entry(entry_id, user_id, None, 60)
        # no commit(): the unit's exit rolls back, and there is nothing left to undo
    assert claim is not None
    with UnitOfWork(factory) as uow:  # the pooled connection is back to transactions
        uow.visualizations.fail(entry_id, "rolled back")
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM visualizations")).scalar_one()
    assert status == "processing"
