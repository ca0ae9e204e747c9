"""Seed idempotency and a real pg_dump / pg_restore round trip."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest
from sqlalchemy import Engine, text

from db import backup
from db.readiness import schema_state
from db.seed import SAMPLE_ENTRIES, seed_dev_data
from db.uow import UnitOfWork

pytestmark = pytest.mark.integration

SNAPSHOT_SQL = """
SELECT u.email, u.name, e.situation, e.emotions, e.intensity::text, e.notes, e.source
FROM users u LEFT JOIN emotion_entries e ON e.user_id = u.id
ORDER BY u.email, e.situation
"""


def _snapshot(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(SNAPSHOT_SQL))]


def test_seed_twice_leaves_the_same_rows_as_once(uow: UnitOfWork, engine: Engine) -> None:
    first = seed_dev_data(uow)
    after_first = _snapshot(engine)
    second = seed_dev_data(uow)
    assert first.users_created == 3
    assert first.entries_created == sum(len(v) for v in SAMPLE_ENTRIES.values())
    assert (second.users_created, second.entries_created) == (0, 0)
    assert _snapshot(engine) == after_first


def test_seeded_test_user_has_a_bcrypt_password(uow: UnitOfWork, engine: Engine) -> None:
    seed_dev_data(uow)
    with engine.connect() as conn:
        hashed = conn.execute(
            text("SELECT hashed_password FROM users WHERE email = 'test@example.com'")
        ).scalar_one()
    assert hashed.startswith("$2b$")
    assert bcrypt.checkpw(b"Test123!", hashed.encode())


@pytest.mark.parametrize("filename", ["backup.dump", "backup.sql.gz"])
def test_backup_restore_round_trip(
    uow: UnitOfWork, engine: Engine, db_url: str, empty_db_url: str, tmp_path: Path, filename: str
) -> None:
    seed_dev_data(uow)
    original = _snapshot(engine)
    path = backup.backup(db_url, tmp_path / filename)
    assert path.stat().st_size > 1000
    backup.restore(empty_db_url, path)
    from db.engine import make_engine

    restored_engine = make_engine(empty_db_url, null_pool=True)
    try:
        assert _snapshot(restored_engine) == original
        with restored_engine.connect() as conn:
            version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        assert (version,) == schema_state(db_url).head
    finally:
        restored_engine.dispose()


def test_restore_of_a_missing_file_is_a_clear_error(empty_db_url: str, tmp_path: Path) -> None:
    with pytest.raises(backup.BackupError, match="backup file not found"):
        backup.restore(empty_db_url, tmp_path / "nope.dump")
