"""``emotionviz health``, run as a container health check runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from db import migrate

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
USER_TABLES = (
    "users",
    "emotion_entries",
    "visualizations",
    "intake_sessions",
    "emotion_analytics",
    "api_keys",
)


def _health(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", "health", *args],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        cwd=REPO_ROOT / "tests",  # no .env here
        capture_output=True,
        text=True,
        timeout=60,
    )


def _sql(url: str, statement: str) -> list[tuple[object, ...]]:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cursor = conn.execute(statement)
        return cursor.fetchall() if cursor.description else []


def _scans(url: str) -> dict[str, int]:
    rows = _sql(
        url,
        "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0) "
        "FROM pg_stat_user_tables WHERE relname = ANY(ARRAY"
        f"{list(USER_TABLES)})",
    )
    return {str(name): int(str(count)) for name, count in rows}


def test_healthy_when_database_broker_and_schema_are_right(
    db_url: str, redis_server_url: str
) -> None:
    env = {"DATABASE_URL": db_url, "REDIS_URL": redis_server_url}
    before = _scans(db_url)
    proc = _health(env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("healthy: ") and proc.stderr == ""
    as_json = _health(env, "--json")
    assert as_json.returncode == 0
    document = json.loads(as_json.stdout)
    assert document["ok"] is True
    assert [c["name"] for c in document["checks"]] == ["database", "schema", "broker"]
    # Cheap: the stats a backend flushes as it exits show no read of any product table.
    assert _scans(db_url) == before


def test_a_database_behind_or_ahead_of_head_fails_naming_the_schema(
    db_url: str, empty_db_url: str, redis_server_url: str
) -> None:
    empty = _health({"DATABASE_URL": empty_db_url, "REDIS_URL": redis_server_url})
    assert empty.returncode == 1 and empty.stdout == ""
    assert empty.stderr.strip().splitlines() == [
        "emotionviz health: schema: not migrated: run emotionviz migrate"
    ]
    _sql(db_url, "UPDATE alembic_version SET version_num = 'f00d'")
    other = _health({"DATABASE_URL": db_url, "REDIS_URL": redis_server_url})
    assert other.returncode == 1
    (line,) = other.stderr.strip().splitlines()
    (head,) = migrate.head_revisions()
    assert f"schema: at f00d, this release's head is {head}" in line


def test_unreachable_services_fail_in_one_line_naming_each(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": "postgresql://emotionviz:hunter2secret@127.0.0.1:1/emotionviz",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    proc = _health(env, "--timeout", "2")
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("emotionviz health: database: ")
    assert "schema: unknown (database unreachable)" in line and "broker: " in line
    assert "hunter2secret" not in proc.stderr
    amqp = _health({**env, "BROKER_URL": "amqp://guest:guest@127.0.0.1:1/"}, "--json")
    checks = {c["name"]: c for c in json.loads(amqp.stdout)["checks"]}
    assert amqp.returncode == 1 and amqp.stderr == ""
    assert checks["broker"]["ok"] is False and "127.0.0.1:1" in checks["broker"]["detail"]
    assert checks["redis"]["ok"] is False  # rate limits and counters live there regardless


def test_unset_urls_report_embedded_servers_not_running_without_starting_them(
    tmp_path: Path,
) -> None:
    env = {"DATABASE_URL": "", "REDIS_URL": "", "DATA_DIR": str(tmp_path / "data")}
    proc = _health(env)
    assert proc.returncode == 1
    assert proc.stderr.count("is not set and the embedded server is not running") == 2
    assert not (tmp_path / "data" / "postgres").exists()


def test_a_bad_timeout_is_bad_input() -> None:
    proc = _health({}, "--timeout", "0")
    assert proc.returncode == 2
    assert "not a number of seconds" in proc.stderr
