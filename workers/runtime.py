"""Turn settings into live connections: explicit URLs win, else embedded services."""

from __future__ import annotations

import contextlib
from functools import lru_cache

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import embedded
from db.engine import make_engine, make_session_factory
from db.uow import UnitOfWork
from workers.settings import Settings, get_settings


def database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded.start_postgres(settings.data_dir)


def redis_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    return embedded.start_redis(settings.data_dir)


@lru_cache(maxsize=1)
def engine() -> Engine:
    settings = get_settings()
    return make_engine(database_url(settings), pool_size=settings.db_pool_size)


@lru_cache(maxsize=1)
def session_factory() -> sessionmaker[Session]:
    return make_session_factory(engine())


def warm_pool() -> None:
    """Open the pool's connections now (a worker at boot): otherwise the first burst of
    messages, a person's first question among them, waits for new connections."""
    pool = engine().pool
    with contextlib.ExitStack() as held:
        for _ in range(getattr(pool, "size", lambda: 1)()):
            held.enter_context(engine().connect())


def unit_of_work() -> UnitOfWork:
    return UnitOfWork(session_factory())


def redact_url(url: str) -> str:
    """A URL fit for logs: the password replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - any unparsable URL is shown as a placeholder
        return "<unparsable url>"
