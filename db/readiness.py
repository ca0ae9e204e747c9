"""Is the database ready for workers: reachable, and its schema at the newest
migration? Cheap (one connection and a one-row read of ``alembic_version``; no table is
counted or scanned), for ``emotionviz health``, /readyz and a worker waiting for the
migration."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from db import migrate
from db.engine import connect, make_engine
from db.errors import translate_database_error
from db.migrate import alembic_config


@dataclass(frozen=True)
class SchemaState:
    current: tuple[str, ...]
    head: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return set(self.current) == set(self.head)


def schema_state(database_url: str) -> SchemaState:
    """The database's Alembic revision next to the code's head. Raises our
    DatabaseUnavailableError (or another EmotionVizError) when it cannot be read."""
    head = tuple(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
    engine = make_engine(database_url, null_pool=True, application_name="emotionviz-health")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            current = tuple(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:
        translated = translate_database_error(exc)
        if translated is None:
            raise
        raise translated from exc
    finally:
        engine.dispose()
    return SchemaState(current, head)


@dataclass(frozen=True)
class DatabaseCheck:
    name: str
    ok: bool
    detail: str


def one_line(exc: BaseException) -> str:
    """An exception as one short line (no newlines, at most 300 characters)."""
    return (" ".join(str(exc).split()) or type(exc).__name__)[:300]


def check_database(
    url: str | None, timeout_s: float, not_running: str = "no database URL"
) -> list[DatabaseCheck]:
    """The database answers, and its schema is at the head this release ships."""
    if url is None:
        return [
            DatabaseCheck("database", False, not_running),
            DatabaseCheck("schema", False, "unknown (no database)"),
        ]
    try:
        with connect(
            url,
            connect_timeout=max(2, round(timeout_s)),  # libpq's minimum is 2 s
            application_name="emotionviz-health",
            autocommit=True,
        ) as conn:
            # The timeout inside the transaction, not as a startup option: PgBouncer
            # refuses startup parameters it does not track ("unsupported startup
            # parameter: options"), and a transaction pooler would not keep a session
            # SET for us anyway.
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
                    rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            except psycopg.errors.UndefinedTable:
                rows = None
    except psycopg.Error as exc:
        return [
            DatabaseCheck("database", False, one_line(exc)),
            DatabaseCheck("schema", False, "unknown (database unreachable)"),
        ]
    database = DatabaseCheck("database", True, "answers")
    heads = sorted(migrate.head_revisions())
    if rows is None:
        return [database, DatabaseCheck("schema", False, "not migrated: run emotionviz migrate")]
    current = sorted(str(row[0]) for row in rows)
    if current != heads:
        return [
            database,
            DatabaseCheck(
                "schema",
                False,
                f"at {','.join(current) or 'base'}, this release's head is {','.join(heads)}: "
                "run emotionviz migrate",
            ),
        ]
    return [database, DatabaseCheck("schema", True, f"at head {','.join(heads)}")]
