"""The console script, run as a real process, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from db.engine import make_engine

pytestmark = pytest.mark.integration


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_invalid_setting_stops_with_one_line(tmp_path: Path) -> None:
    proc = _run(
        ["services", "status"], {"WORKER_THREADS": "lots", "PYTHONPATH": str(Path.cwd())}, tmp_path
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "WORKER_THREADS" in lines[0], proc.stderr


def test_help_lists_the_operator_commands(tmp_path: Path) -> None:
    proc = _run(["--help"], {"PYTHONPATH": str(Path.cwd())}, tmp_path)
    assert proc.returncode == 0
    for name in ("seed", "services", "migrate", "demo", "backup", "restore"):
        assert name in proc.stdout


def test_migrate_check_and_seed_via_cli(db_url: str, tmp_path: Path) -> None:
    env = {"DATABASE_URL": db_url, "PYTHONPATH": str(Path.cwd())}
    proc = _run(["migrate", "--check"], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "models and database schema match" in proc.stdout
    first = _run(["seed"], env, tmp_path)
    second = _run(["seed"], env, tmp_path)
    assert "3 users and 32 entries created" in first.stdout, first.stderr
    assert "0 users and 0 entries created" in second.stdout
    assert not (tmp_path / ".data" / "redis").exists()  # no broker needed: none started
    assert (
        "postgresql" not in first.stderr.lower() or "***" in first.stderr or "@" not in first.stderr
    )


def test_embedded_services_start_reuse_and_stop(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(Path.cwd()), "DATA_DIR": str(tmp_path / "data")}
    for key in ("DATABASE_URL", "REDIS_URL"):
        env[key] = ""
    started = _run(["services", "start"], env, tmp_path)
    assert started.returncode == 0, started.stderr
    assert "postgres  running" in started.stdout and "redis     running" in started.stdout
    seeded = _run(["seed"], env, tmp_path)
    assert "3 users" in seeded.stdout, seeded.stderr
    again = _run(["seed"], env, tmp_path)  # reuses the same running servers and data
    assert "0 users and 0 entries" in again.stdout
    stopped = _run(["services", "stop"], env, tmp_path)
    assert "postgres  stopped" in stopped.stdout and "redis     stopped" in stopped.stdout
    status = _run(["services", "status"], env, tmp_path)
    assert "postgres  stopped" in status.stdout and "redis     stopped" in status.stdout


def test_a_worker_never_migrates_it_waits_for_the_schema(
    empty_db_url: str, redis_server_url: str, tmp_path: Path
) -> None:
    # REDIS_URL given: without it the worker started an embedded Redis in tmp_path that
    # outlived the test run (the session's leftover check in tests/conftest.py).
    env = {
        "DATABASE_URL": empty_db_url,
        "REDIS_URL": redis_server_url,
        "PYTHONPATH": str(Path.cwd()),
        "PROVIDER": "local",
    }
    proc = _run(["worker", "--schema-wait", "0"], env, tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "run 'emotionviz migrate' first" in lines[0], proc.stderr
    engine = make_engine(empty_db_url, null_pool=True)
    with engine.connect() as conn:  # the worker created nothing
        tables = conn.execute(text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
        assert tables.scalar_one() == 0
    engine.dispose()
