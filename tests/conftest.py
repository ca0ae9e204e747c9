"""Shared fixtures: real PostgreSQL and Redis for every test that asks for them.

Servers: TEST_DATABASE_URL / TEST_REDIS_URL when set, else the embedded ones started
in .data/test-services. Isolation: the migrations run once per session into a template
database that is cloned for each test (CREATE DATABASE ... TEMPLATE), and each test
gets its own Redis key namespace, so two runs never collide and no test sees another's
rows or messages.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dramatiq
import psycopg
import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from db import embedded, migrate
from db.engine import make_engine, make_session_factory
from db.uow import UnitOfWork
from tests import leftovers
from workers.messaging.broker import build_broker
from workers.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_ID = uuid.uuid4().hex[:8]
TEST_SERVICES_DIR = REPO_ROOT / ".data" / "test-services"
SESSION_STARTED = time.time()
# Every process the run starts inherits it: the end-of-run check finds what is left.
os.environ[leftovers.MARKER] = RUN_ID


_BASETEMP: list[Path] = []


@pytest.fixture(scope="session", autouse=True)
def _session_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Remember the session's temporary folder for the leftover check."""
    _BASETEMP.append(tmp_path_factory.getbasetemp())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a process it started is still running (tests/leftovers.py)."""
    basetemp = _BASETEMP[0] if _BASETEMP else None
    left = leftovers.wait_for_leftovers(RUN_ID, basetemp, SESSION_STARTED)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["processes left running by this test run (killed now):", *left]
        if reporter is not None:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _libpq(url: str) -> str:
    """A psycopg conninfo for a SQLAlchemy-style URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _already_running(name: str) -> bool:
    return any(s.running for s in embedded.status(TEST_SERVICES_DIR) if s.name == name)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of the maintenance database on the test server. An embedded server this
    session started is stopped when the session ends."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    started_here = not _already_running("postgres")
    yield embedded.start_postgres(TEST_SERVICES_DIR)
    if started_here:
        embedded.stop_postgres(TEST_SERVICES_DIR)


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    started_here = not _already_running("redis")
    yield embedded.start_redis(TEST_SERVICES_DIR)
    if started_here:
        embedded.stop_redis(TEST_SERVICES_DIR)


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(_libpq(url), autocommit=True)


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@dataclass
class DatabaseFactory:
    server_url: str
    template: str
    counter: int = 0

    def create(self, *, migrated: bool = True) -> tuple[str, str]:
        self.counter += 1
        name = f"evt_{RUN_ID}_{self.counter}"
        with _admin(self.server_url) as conn:
            if migrated:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        return name, _with_database(self.server_url, name)

    def drop(self, name: str) -> None:
        with _admin(self.server_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def database_factory(pg_server_url: str) -> Iterator[DatabaseFactory]:
    template = f"evt_{RUN_ID}_template"
    with _admin(pg_server_url) as conn:
        conn.execute(f'CREATE DATABASE "{template}"')
    migrate.upgrade(_with_database(pg_server_url, template))
    factory = DatabaseFactory(pg_server_url, template)
    yield factory
    factory.drop(template)


@pytest.fixture
def db_url(database_factory: DatabaseFactory) -> Iterator[str]:
    """A freshly migrated database of this test's own."""
    name, url = database_factory.create()
    yield url
    database_factory.drop(name)


@pytest.fixture
def empty_db_url(database_factory: DatabaseFactory) -> Iterator[str]:
    """An empty database (no migrations applied)."""
    name, url = database_factory.create(migrated=False)
    yield url
    database_factory.drop(name)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url, pool_size=4)
    yield eng
    eng.dispose()


@pytest.fixture
def uow(engine: Engine) -> UnitOfWork:
    return UnitOfWork(make_session_factory(engine))


@pytest.fixture
def redis_namespace(redis_server_url: str) -> Iterator[str]:
    namespace = f"evt:{RUN_ID}:{uuid.uuid4().hex[:8]}"
    yield namespace
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=f"{namespace}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def broker(redis_server_url: str, redis_namespace: str) -> Iterator[dramatiq.Broker]:
    """A real Redis broker with our middleware, in the test's namespace (whose keys the
    redis_namespace fixture removes afterwards)."""
    settings = Settings(_env_file=None, redis_namespace=redis_namespace)  # type: ignore[call-arg]
    built = build_broker(settings, redis_server_url)
    yield built
    built.close()
