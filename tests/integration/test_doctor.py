"""`emotionviz doctor` against the real servers (their max_connections and maxclients),
and a worker's pool warmed to its size and no more, on real PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

from db.engine import Database, pool_for_threads
from tests.conftest import RUN_ID, DatabaseFactory

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def doctor_env(
    database_factory: DatabaseFactory, redis_server_url: str
) -> Iterator[dict[str, str]]:
    name, url = database_factory.create()
    yield {
        "DATABASE_URL": url,
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": f"evt:{RUN_ID}:doctor",
        "PROVIDER": "local",
        "PYTHONPATH": str(Path.cwd()),
        "LOG_FORMAT": "json",
    }
    database_factory.drop(name)


def _doctor(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", "doctor", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _server_limits(env: dict[str, str]) -> tuple[int, int]:
    libpq = make_url(env["DATABASE_URL"]).set(drivername="postgresql")
    with psycopg.connect(libpq.render_as_string(hide_password=False)) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
            " - coalesce(current_setting('reserved_connections', true), '0')::int"
        ).fetchone()
    client = redis.Redis.from_url(env["REDIS_URL"])
    maxclients = int(client.config_get("maxclients")["maxclients"])
    client.close()
    assert row is not None
    return int(row[0]), maxclients


def test_a_small_fleet_fits(doctor_env: dict[str, str]) -> None:
    small = {**doctor_env, "WORKER_PROCESSES": "1", "WORKER_THREADS": "8"}
    proc = _doctor(small, "--machines", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[:-1]] == [
        "worker",
        "intake-worker",
        "scheduler",
        "console",
        "cli",
    ]
    available, maxclients = _server_limits(doctor_env)
    assert lines[-1].startswith("fits: 2 machines fit")
    assert f"of {available} (max_connections" in lines[-1]
    assert f"maxclients {maxclients}" in lines[-1]
    assert proc.stderr == ""


def test_a_thousand_machines_do_not_fit(doctor_env: dict[str, str]) -> None:
    proc = _doctor(doctor_env, "--machines", "1000")
    assert proc.returncode == 1
    assert "DOES NOT FIT" in proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("emotionviz doctor: does not fit: 1000 machines do not fit")


def test_json_report(doctor_env: dict[str, str]) -> None:
    proc = _doctor(doctor_env, "--machines", "3", "--json")
    report = json.loads(proc.stdout)
    available, _ = _server_limits(doctor_env)
    assert report["limits"]["postgres_available"] == available
    assert report["machines"] == 3
    worker = next(s for s in report["services"] if s["name"] == "worker")
    assert worker["instances"] == 3
    assert worker["postgres"]["peak"] == 3 * worker["per_instance"]["postgres"]["peak"]
    assert proc.returncode == (0 if report["fits"] else 1)


def test_redis_that_refuses_config_takes_the_setting(doctor_env: dict[str, str]) -> None:
    admin = redis.Redis.from_url(doctor_env["REDIS_URL"])
    user = f"evt_doctor_{uuid.uuid4().hex[:8]}"
    admin.acl_setuser(
        user, enabled=True, nopass=True, keys=["*"], channels=["*"], commands=["+@all", "-config"]
    )
    try:
        url = doctor_env["REDIS_URL"]  # redis://host or the embedded unix:///socket
        scheme = "unix://" if url.startswith("unix://") else "redis://"
        refused = url.replace(scheme, f"{scheme}{user}@", 1)
        assert user in refused, refused
        env = {**doctor_env, "REDIS_URL": refused, "WORKER_PROCESSES": "1"}
        without = _doctor(env, "--machines", "1")
        assert without.returncode == 1
        assert "REDIS_MAXCLIENTS" in without.stderr
        taken = _doctor({**env, "REDIS_MAXCLIENTS": "150"}, "--machines", "1", "--json")
        assert json.loads(taken.stdout)["limits"]["redis_maxclients"] == 150
    finally:
        admin.acl_deluser(user)
        admin.close()


def test_bad_input_exits_2(doctor_env: dict[str, str]) -> None:
    for args in (["--machines", "0"], ["--machines", "ten"], ["--intake-processes", "-1"]):
        proc = _doctor(doctor_env, *args)
        assert proc.returncode == 2, args
        assert len(proc.stderr.strip().splitlines()) == 1


def test_warm_pool_opens_the_pool_of_the_threads_and_no_more(db_url: str) -> None:
    """A worker of 8 threads warms 2 connections (the old code: DB_POOL_SIZE, 10,
    whatever its threads)."""
    size, overflow = pool_for_threads(8)
    name = f"evt-warm-{uuid.uuid4().hex[:6]}"
    database = Database(db_url, pool_size=size, max_overflow=overflow)
    # Our own application_name, to count this engine's connections alone.
    from sqlalchemy import event

    @event.listens_for(database.engine, "connect")
    def _name(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.execute(f"SET application_name = '{name}'")
        dbapi_connection.commit()

    try:
        database.warm_pool()
        libpq = make_url(db_url).set(drivername="postgresql")
        with psycopg.connect(libpq.render_as_string(hide_password=False)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        assert row == (2,)
    finally:
        database.engine.dispose()
