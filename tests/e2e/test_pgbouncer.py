"""The product behind PgBouncer in transaction pooling mode (Debian's pgbouncer 1.18,
started here on a free loopback port): worker processes run the pipeline and the intake
conversation through it, `emotionviz health`, `reconcile` and `doctor` work through it,
and what needs a session (migrations, LISTEN) takes DATABASE_DIRECT_URL.

On the code before DATABASE_POOLER, psycopg prepared a statement after 5 executions and
PgBouncer handed the next transaction to a server that already held "_pg3_0"
(DuplicatePreparedStatement, retried as an unexpected error), and the health check's
startup option was refused ("unsupported startup parameter: options").
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from db.engine import make_session_factory
from db.listen import listen
from db.uow import UnitOfWork
from domain.intake import NOTIFY_CHANNEL
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness
from workers.devtools import pgbouncer
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.producer_api import ProducerAPI
from workers.settings import Settings

pytestmark = [pytest.mark.e2e]

ENTRIES = 24  # well past psycopg's prepare threshold (5) on every pooled connection


@contextlib.contextmanager
def running_pgbouncer(server_url: str, log_path: Path) -> Iterator[str]:
    """The shared starter (workers/devtools/pgbouncer.py); a skip where it is missing."""
    try:
        with pgbouncer.running_pgbouncer(server_url, log_path) as template:
            yield template
    except pgbouncer.PgBouncerUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def pooled(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    pg_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Harness, str]]:
    """The harness with its worker's DATABASE_URL through PgBouncer; (harness, pooled URL)."""
    folder = tmp_path_factory.mktemp("pgbouncer")
    with (
        running_pgbouncer(pg_server_url, folder / "pgbouncer.log") as template,
        running_harness(
            database_factory, redis_server_url, folder, start=False, threads=8
        ) as harness,
    ):
        database = make_url(harness.db_url).database
        pooled_url = template.format(db=database)
        harness.env.update(
            {
                "DATABASE_URL": pooled_url,
                "DATABASE_DIRECT_URL": harness.db_url,
                "DATABASE_POOLER": "pgbouncer",
                "DB_POOL_SIZE": "0",  # sized to the threads: 8 -> 2, no overflow
                "WORKER_THREADS": "8",
            }
        )
        harness.start_worker(threads=8)
        harness.start_worker(threads=8)  # two processes: their transactions interleave
        yield harness, pooled_url


def _cli(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**harness.env, "PROVIDER": "local", "METRICS_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_pipeline_through_pgbouncer_prepares_nothing(pooled: tuple[Harness, str]) -> None:
    harness, pooled_url = pooled
    marker = "pgb" + uuid.uuid4().hex[:8]
    entries = [harness.make_entry(f"{marker}-{i}") for i in range(ENTRIES)]
    for entry_id, user_id in entries:
        harness.publish(entry_id, user_id)
    rows = [harness.wait_for(entry_id, timeout=60) for entry_id, _ in entries]
    assert [r["status"] for r in rows] == ["completed"] * ENTRIES, [
        r["error_message"] for r in rows
    ]
    log = harness.log_path.read_text(errors="replace")
    assert "DuplicatePreparedStatement" not in log and "_pg3_" not in log, log[-3000:]
    assert "unexpected" not in log.lower(), log[-3000:]
    # Each paid call once: nothing was retried.
    calls = harness.calls(marker)
    assert calls == {"analysis": ENTRIES, "image": ENTRIES}, calls
    # The workers' connections are PgBouncer's clients (its admin console speaks the
    # simple query protocol only: a client-side cursor), 2 processes x (pool 2 + 2).
    database = make_url(harness.db_url).database
    admin = make_url(pooled_url).set(drivername="postgresql", database="pgbouncer")
    with psycopg.connect(
        admin.render_as_string(hide_password=False),
        autocommit=True,
        cursor_factory=psycopg.ClientCursor,
    ) as conn:
        cursor = conn.cursor()
        cursor.execute("SHOW CLIENTS")
        columns = [d.name for d in cursor.description or ()]
        clients = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    ours = [c for c in clients if c["database"] == database]
    assert 2 <= len(ours) <= 2 * 4, clients


def test_intake_through_pgbouncer_and_listen_on_the_direct_url(
    pooled: tuple[Harness, str],
) -> None:
    harness, _ = pooled
    settings = Settings(_env_file=None, redis_namespace=harness.namespace)  # type: ignore[call-arg]
    broker = build_broker(settings, harness.redis_url)
    factory = make_session_factory(harness.engine)
    producer = ProducerAPI(lambda: UnitOfWork(factory, Producer(broker)))
    try:
        marker = "pgi" + uuid.uuid4().hex[:8]
        with harness.engine.begin() as conn:
            user_id = conn.execute(
                text(
                    "INSERT INTO users (email, hashed_password, name) "
                    "VALUES (:e, 'x', 'I') RETURNING id"
                ),
                {"e": f"{marker}@example.com"},
            ).scalar_one()
        # LISTEN holds a session: DATABASE_DIRECT_URL; the worker's NOTIFY rides its
        # transaction through PgBouncer.
        with listen(harness.db_url, NOTIFY_CHANNEL) as announcements:
            session_id = producer.start_intake(user_id, f"Situation {marker}: a long week")
            for step in (1, 2, 3):
                deadline = time.monotonic() + 30
                heard = None
                while heard is None or heard.get("step") != step:
                    assert time.monotonic() < deadline, harness.log_path.read_text()[-3000:]
                    heard = announcements.next(timeout=1.0)
                assert heard["session_id"] == str(session_id)
                producer.submit_answer(session_id, user_id, step=step, answer=f"answer {step}")
        deadline = time.monotonic() + 30
        while True:
            with harness.engine.connect() as conn:
                entry = conn.execute(
                    text("SELECT id FROM emotion_entries WHERE intake_session_id = :s"),
                    {"s": session_id},
                ).scalar_one_or_none()
            if entry is not None:
                break
            assert time.monotonic() < deadline, harness.log_path.read_text()[-3000:]
            time.sleep(0.1)
        assert harness.wait_for(entry, timeout=30)["status"] == "completed"
    finally:
        broker.close()


def test_commands_through_pgbouncer(pooled: tuple[Harness, str]) -> None:
    harness, _ = pooled
    # The health check sets its timeout inside the transaction (a startup option was
    # refused by PgBouncer), the reconciler's transaction-level lock holds through it.
    health = _cli(harness, "health")
    assert health.returncode == 0, health.stderr
    reconcile = _cli(harness, "reconcile")
    assert reconcile.returncode == 0, reconcile.stderr
    # Migrations take the direct URL (a session of their own).
    migrate = _cli(harness, "migrate")
    assert migrate.returncode == 0, migrate.stderr
    # Doctor reads PgBouncer's limits from its admin console: PostgreSQL sees its pool
    # (default_pool_size 12) and the direct sessions; the clients meet max_client_conn.
    doctor = _cli(harness, "doctor", "--machines", "1")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    verdict = doctor.stdout.strip().splitlines()[-1]
    assert "PostgreSQL fits: 14 at peak" in verdict, verdict
    assert "clients of PgBouncer at peak fit its max_client_conn 400" in verdict, verdict
    crowd = _cli(harness, "doctor", "--machines", "100")
    assert crowd.returncode == 1, crowd.stdout + crowd.stderr
    assert "DO NOT FIT its max_client_conn 400" in crowd.stderr
