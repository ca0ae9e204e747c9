"""What the database side accepts, for ``emotionviz doctor``: PostgreSQL's connection
slots, the jit setting a pooled session gets, and PgBouncer's own limits (read from its
admin console when our user may: ``admin_users`` or ``stats_users``)."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from sqlalchemy.engine import make_url

from db.engine import connect, libpq_url, normalise_url


@dataclass(frozen=True)
class PostgresSlots:
    max_connections: int
    reserved: int  # superuser_reserved_connections + reserved_connections (PG 16)

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved


@dataclass(frozen=True)
class PgBouncerConfig:
    max_client_conn: int
    # Server connections one database/user pair may open: default_pool_size +
    # reserve_pool_size (what PostgreSQL sees of the product through PgBouncer).
    server_connections: int


def postgres_slots(direct_url: str) -> PostgresSlots:
    with connect(direct_url, autocommit=True, application_name="emotionviz-doctor") as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int,"
            " coalesce(current_setting('reserved_connections', true), '0')::int"
        ).fetchone()
    assert row is not None
    return PostgresSlots(int(row[0]), int(row[1]) + int(row[2]))


def session_jit(url: str) -> str:
    """The jit setting a session through ``url`` starts with (the role's, behind a
    pooler: a SET on connect does not follow our transactions there)."""
    with connect(url, autocommit=True, application_name="emotionviz-doctor") as conn:
        row = conn.execute("SELECT current_setting('jit')").fetchone()
    return str(row[0]) if row else "unknown"


def pgbouncer_config(pooled_url: str) -> PgBouncerConfig | None:
    """PgBouncer's limits from its admin console (the ``pgbouncer`` database at the same
    address), or None when it refuses us. The console speaks the simple query protocol
    only: a client-side cursor."""
    admin = make_url(normalise_url(pooled_url)).set(database="pgbouncer")
    try:
        with psycopg.connect(
            libpq_url(admin.render_as_string(hide_password=False)),
            autocommit=True,
            connect_timeout=5,
            cursor_factory=psycopg.ClientCursor,
        ) as conn:
            cursor = conn.cursor()
            cursor.execute("SHOW CONFIG")
            values = {str(row[0]): str(row[1]) for row in cursor.fetchall()}
    except psycopg.Error:
        return None
    try:
        return PgBouncerConfig(
            int(values["max_client_conn"]),
            int(values["default_pool_size"]) + int(values.get("reserve_pool_size", "0")),
        )
    except (KeyError, ValueError):
        return None
