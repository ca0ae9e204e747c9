"""Engine and session factory. psycopg 3 driver; one engine per process."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, NullPool, create_engine, event
from sqlalchemy.orm import Session, sessionmaker


def normalise_url(url: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+psycopg:// alike."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    null_pool: bool = False,
    application_name: str = "emotionviz",
) -> Engine:
    pooling: dict[str, Any] = (
        {"poolclass": NullPool}
        if null_pool
        else {
            "pool_size": pool_size,
            "max_overflow": pool_size,
            "pool_pre_ping": True,  # survive a database restart between jobs
            "pool_recycle": 1800,
        }
    )
    engine = create_engine(
        normalise_url(url),
        connect_args={"application_name": application_name, "connect_timeout": 10},
        **pooling,
    )

    @event.listens_for(engine, "connect")
    def _utc(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET TIME ZONE 'UTC'")

    return engine


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=False)
