"""Seed idempotency and a real pg_dump / pg_restore round trip."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

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


# A table of ~16 MB of text (distinct rows, so the plain dump is that big too).
BALLAST_ROWS = 16_000
BALLAST_SQL = f"""
CREATE TABLE ballast (id int PRIMARY KEY, payload text NOT NULL);
INSERT INTO ballast SELECT g, repeat(md5(g::text), 32) FROM generate_series(1, {BALLAST_ROWS}) g;
"""
BALLAST_DIGEST = "SELECT count(*), md5(string_agg(payload, '' ORDER BY id)) FROM ballast"


@pytest.mark.slow
@pytest.mark.parametrize("filename", ["big.dump", "big.sql.gz"])
def test_backup_and_restore_stream_a_dump_larger_than_what_they_hold(
    engine: Engine, db_url: str, empty_db_url: str, tmp_path: Path, filename: str
) -> None:
    import tracemalloc

    from db.engine import make_engine

    with engine.begin() as conn:
        conn.exec_driver_sql(BALLAST_SQL)
        expected = conn.execute(text(BALLAST_DIGEST)).one()
    dump_bytes = BALLAST_ROWS * 1024
    tracemalloc.start()
    try:
        path = backup.backup(db_url, tmp_path / filename)
        _, backup_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        backup.restore(empty_db_url, path)
        _, restore_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Holding the dump whole would peak above dump_bytes; a chunk at a time stays far below.
    assert backup_peak < dump_bytes / 4, backup_peak
    assert restore_peak < dump_bytes / 4, restore_peak
    assert not list(tmp_path.glob("*.partial"))
    restored = make_engine(empty_db_url, null_pool=True)
    try:
        with restored.connect() as conn:
            assert conn.execute(text(BALLAST_DIGEST)).one() == expected
    finally:
        restored.dispose()


def test_a_failed_sql_restore_names_psql_and_its_error(empty_db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "broken.sql.gz"
    with gzip.open(path, "wb") as sink:
        sink.write(b"CREATE TABLE fine (id int);\nSELECT no_such_function();\n")
    with pytest.raises(backup.BackupError, match=r"^psql failed: .*no_such_function"):
        backup.restore(empty_db_url, path)


def test_restore_refuses_a_database_that_is_not_empty_and_runs_nothing(
    uow: UnitOfWork, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    seed_dev_data(uow)
    path = backup.backup(db_url, tmp_path / "again.dump")
    before = _snapshot(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM emotion_entries"))
    with pytest.raises(backup.DatabaseNotEmptyError, match=r"is not empty .*--clean"):
        backup.restore(db_url, path)
    assert _snapshot(engine) != before  # nothing was restored over it


def test_an_empty_database_counts_no_objects_a_migrated_one_does(
    empty_db_url: str, db_url: str
) -> None:
    assert backup.user_object_count(empty_db_url) == 0
    assert backup.user_object_count(db_url) > 10


# --- the CLI, as an operator runs it --------------------------------------------------

PLANTED_PASSWORD = "pw-planted-9c1e"


def _with_password(url: str) -> str:
    """The URL with a password (the test servers trust loopback, so any will do): the
    output is then searched for it."""
    parsed = make_url(url)
    if parsed.password:
        return url
    return parsed.set(password=PLANTED_PASSWORD).render_as_string(hide_password=False)


def _cli(args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(Path.cwd())},
        cwd=cwd,
        stdin=subprocess.DEVNULL,  # no terminal: nobody to confirm
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_clean_line(proc: subprocess.CompletedProcess[str], url: str) -> str:
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output and "CREATE FUNCTION" not in output, output
    password = make_url(url).password
    assert password and str(password) not in output, output
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("filename", ["live.dump", "live.sql.gz"])
def test_cli_restore_into_a_live_database_refuses_in_one_line(
    uow: UnitOfWork, engine: Engine, db_url: str, tmp_path: Path, filename: str
) -> None:
    seed_dev_data(uow)
    path = backup.backup(db_url, tmp_path / filename)
    url = _with_password(db_url)
    proc = _cli(["restore", str(path)], url, tmp_path)
    assert proc.returncode == 1
    line = _one_clean_line(proc, url)
    assert line.startswith("emotionviz restore: database ") and "not empty" in line, line
    assert "--clean" in line


def test_cli_restore_clean_without_a_terminal_or_yes_refuses_and_keeps_the_data(
    uow: UnitOfWork, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    seed_dev_data(uow)
    path = backup.backup(db_url, tmp_path / "b.dump")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM emotion_entries WHERE intensity > 5"))
    changed = _snapshot(engine)
    url = _with_password(db_url)
    proc = _cli(["restore", "--clean", str(path)], url, tmp_path)
    assert proc.returncode == 2
    assert "--yes" in _one_clean_line(proc, url)
    assert _snapshot(engine) == changed


@pytest.mark.parametrize("filename", ["replace.dump", "replace.sql.gz"])
def test_cli_restore_clean_yes_replaces_the_database_with_the_backup(
    uow: UnitOfWork, engine: Engine, db_url: str, tmp_path: Path, filename: str
) -> None:
    seed_dev_data(uow)
    original = _snapshot(engine)
    path = backup.backup(db_url, tmp_path / filename)
    with engine.begin() as conn:  # the live database moves on after the backup
        conn.execute(text("DELETE FROM emotion_entries WHERE intensity > 5"))
        conn.execute(text("UPDATE users SET name = 'changed since the backup'"))
        conn.exec_driver_sql("CREATE TABLE stray (id int)")
    engine.dispose()  # the restore must not wait for this test's own idle connections
    url = _with_password(db_url)
    proc = _cli(["restore", "--clean", "--yes", str(path)], url, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "previous contents replaced" in proc.stdout
    assert PLANTED_PASSWORD not in proc.stdout + proc.stderr
    assert _snapshot(engine) == original
    with engine.connect() as conn:
        version = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        stray = conn.execute(text("SELECT to_regclass('stray')")).scalar_one()
    assert (version,) == schema_state(db_url).head
    assert stray is None


def test_a_failed_backup_leaves_no_file(tmp_path: Path) -> None:
    for name in ("gone.sql.gz", "gone.dump"):
        with pytest.raises(backup.BackupError, match=r"^pg_dump failed: "):
            backup.backup("postgresql://nobody@127.0.0.1:1/none", tmp_path / name)
    assert list(tmp_path.iterdir()) == []
