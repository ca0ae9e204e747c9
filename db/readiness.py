"""Is the database ready for workers: reachable, and its schema at the newest
migration? Cheap (one connection, two catalog reads), for /readyz and health checks."""

from __future__ import annotations

from dataclasses import dataclass

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from db.engine import make_engine
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
