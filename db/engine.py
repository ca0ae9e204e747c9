"""Engine and session factory. psycopg 3 driver; one engine per process.

``Database`` is what the composition root holds (workers/bootstrap.py): the engine, its
session factory and units of work on them, so nothing outside db/ touches SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import psycopg
from sqlalchemy import Engine, NullPool, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from db.uow import UnitOfWork
from domain.messages import Publisher

# A pooled connection unused for this long is pinged before it is handed out.
PING_IDLE_S = 2.0


def normalise_url(url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+psycopg:// alike."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def libpq_url(url: str) -> str:
    """The URL as libpq (``psycopg.connect``) takes it: no SQLAlchemy driver name."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """A URL fit for logs: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - any unparsable URL is shown as a placeholder
        return "<unparsable url>"


# --- behind a pooler ----------------------------------------------------------------
# PgBouncer in transaction pooling mode hands each transaction to any server connection:
# psycopg's prepared statements (after 5 executions of a statement) meet a server that
# already holds "_pg3_0" (DuplicatePreparedStatement; PgBouncer 1.18 has no support),
# startup options are refused, and session settings land on whichever server connection
# ran them. The composition root says once per process whether DATABASE_URL is pooled
# (DATABASE_POOLER=pgbouncer); every connection opened here follows it.
_pooled = False


def use_pooler(pooled: bool) -> None:
    """Set by workers/bootstrap.py from DATABASE_POOLER before any connection opens."""
    global _pooled
    _pooled = pooled


def pooled() -> bool:
    return _pooled


def driver_options() -> dict[str, Any]:
    """psycopg connect() arguments every connection of ours takes: no prepared
    statements through a transaction pooler (None: never prepare)."""
    return {"prepare_threshold": None} if _pooled else {}


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """A psycopg connection outside the pool (LISTEN, health checks), pooler-safe."""
    return psycopg.connect(libpq_url(normalise_url(url)), **driver_options(), **kwargs)


def pool_for_threads(threads: int, size: int = 0, overflow: int = 0) -> tuple[int, int]:
    """(pool size, max overflow) for a process whose ``threads`` run SQL (the worker
    threads and the lease heartbeat). ``size`` 0 sizes it from the threads: a job holds
    a connection only while it runs SQL (a few ms per unit of work against seconds of
    model calls), so a quarter of the threads (at least 2), kept open. ``overflow``:
    connections opened beyond it at peak and closed once returned, 0 by default (at
    each burst they were opened again, on new backends that met every statement cold:
    docs/benchmarks.md, "The pool's overflow"); -1 means as many as the pool, never
    more than threads + 1 in all, the most that can be used at once. Explicit values
    win (DB_POOL_SIZE, DB_MAX_OVERFLOW)."""
    users = threads + 1  # + the lease heartbeat thread
    pool = size if size > 0 else min(users, max(2, math.ceil(threads / 4)))
    extra = pool if overflow < 0 else overflow
    if size == 0 and overflow < 0:
        extra = max(0, min(extra, users - pool))
    return pool, extra


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    null_pool: bool = False,
    application_name: str = "emotionviz",
) -> Engine:
    pooling: dict[str, Any] = (
        {"poolclass": NullPool}
        if null_pool
        else {
            "pool_size": pool_size,
            "max_overflow": pool_size if max_overflow is None else max_overflow,
            "pool_recycle": 1800,
            # The most recently used connection first: a few hot connections keep their
            # backend's caches and prepared statements (the analytics refresh plans in
            # ~5 ms, runs prepared in under 1), while the rest of the pool idles. First
            # in, first out cycled every entry through every connection, so each one
            # met each statement cold: one entry's completion took 25 ms, 5 ms after.
            "pool_use_lifo": True,
        }
    )
    engine = create_engine(
        normalise_url(url),
        connect_args={
            "application_name": application_name,
            "connect_timeout": 10,
            **driver_options(),
        },
        **pooling,
    )
    behind_pooler = _pooled

    @event.listens_for(engine, "connect")
    def _session_settings(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cursor:
            # PgBouncer tracks TimeZone (a reported parameter) and sets it again on
            # whichever server connection serves this client: safe behind it too.
            cursor.execute("SET TIME ZONE 'UTC'")
            if not behind_pooler:
                # JIT compiled the analytics statement for ~0.5 s per batch and gained
                # less; nothing else we run is big enough to profit. Off per connection,
                # not per transaction: a SET LOCAL was a round trip on every entry's
                # refresh. Behind a transaction pooler a session SET lands on one
                # server connection, not ours: there it is the role's setting
                # (ALTER ROLE ... SET jit = off, docs/operations.md), which
                # `emotionviz doctor` checks.
                cursor.execute("SET jit = off")
        # Committed: the pool rolls back at check-in, and a rolled-back SET is undone
        # (the time zone used to hold only for a connection's first transaction).
        dbapi_connection.commit()

    if not null_pool:
        _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """Survive a database restart between jobs: a connection back from the pool after
    PING_IDLE_S unused is pinged first, and replaced if dead. SQLAlchemy's pre-ping
    would ping every checkout: a round trip per transaction, four per entry, for
    connections used a moment ago (a restart while they are busy fails the running
    transaction either way, and its job is retried)."""

    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        last = record.info.get("checked_in_at")
        if last is None or time.monotonic() - last < PING_IDLE_S:
            return  # just opened, or used a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception:  # noqa: BLE001 - any failure to ping means a dead connection
            alive = False
        if not alive:
            # The pool discards this connection and checks out another (3 tries).
            raise sa_exc.DisconnectionError("pooled connection is dead")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)


class Database:
    """One process's connection pool to one database, and units of work on it."""

    def __init__(self, url: str, *, pool_size: int = 10, max_overflow: int | None = None) -> None:
        self.engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self.session_factory = make_session_factory(self.engine)

    def unit_of_work(self, publisher: Publisher | None = None) -> UnitOfWork:
        return UnitOfWork(self.session_factory, publisher)

    def warm_pool(self) -> None:
        """Open the pool's connections now (a worker at boot): otherwise the first burst
        of messages, a person's first question among them, waits for new connections.
        The pool's size, no more: what it keeps open at rest anyway (overflow
        connections are closed when they come back)."""
        size = getattr(self.engine.pool, "size", lambda: 1)()
        with contextlib.ExitStack() as held:
            for _ in range(size):
                held.enter_context(self.engine.connect())
