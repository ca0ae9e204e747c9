"""Erasing a person: every row that names them, in one transaction, and the tombstone
that makes a restore erase them again (migration 0011, docs/operations.md "Erasing a
person, and retention").

What cascades from ``users`` (the foreign keys): emotion_entries, visualizations,
intake_sessions, emotion_analytics, api_keys, entry_arrivals (through the entries).
What does not, and is deleted here by the person's ids: completion_events (the payload
names user_id, indexed; event_deliveries cascade from them), analytics_refresh_queue
(no FK, and the entries' delete trigger adds rows for the person: deleted after the
cascade), model_calls (the paid-call ledger: by user, entry or intake session), and
the ids inside operator_actions (replaced by the person's log reference: the trail
keeps what was done, not who it was done to).
media_garbage gets the person's visualization ids (from its trigger, and here for rows
that name no picture yet: a worker may have stored one and died); the caller deletes
their pictures through it.

The tombstone holds the SHA-256 of the id, never the id: a dump taken after the erasure
must not name the person, and a restore finds the restored rows by digest.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

from domain.identifiers import UUID_PATTERN

if TYPE_CHECKING:
    from db.uow import UnitOfWork

# Rows of these tables are counted before the cascade removes them (the report).
_CASCADED = {
    "emotion_entries": "user_id",
    "visualizations": "user_id",
    "intake_sessions": "user_id",
    "emotion_analytics": "user_id",
    "api_keys": "user_id",
    "entry_arrivals": "user_id",
}
# The ledger's rows for the person: charged to them, or for one of their entries or
# intake sessions (a paid call may have been charged to someone else's user_id). One pass
# over model_calls (only user_id is indexed: an index per id column would be written on
# every paid call for the sake of a rare erasure).
_MODEL_CALLS = (
    "FROM model_calls WHERE user_id = :u OR entry_id = ANY(CAST(:e AS uuid[])) "
    "OR intake_session_id = ANY(CAST(:s AS uuid[]))"
)
# Completion events naming the person (idx_completion_events_payload_user, migration
# 0011), deleted once; their deliveries (which cascade) counted in the same statement,
# whose snapshot still sees them.
_DELETE_EVENTS = """
WITH gone AS (DELETE FROM completion_events WHERE payload->>'user_id' = :t RETURNING id)
SELECT (SELECT count(*) FROM gone),
       (SELECT count(*) FROM event_deliveries WHERE event_id IN (SELECT id FROM gone))
"""


def user_digest(user_id: uuid.UUID | str) -> bytes:
    """The tombstone's key: SHA-256 of the id's canonical text (what PostgreSQL's
    ``sha256(convert_to(id::text, 'UTF8'))`` gives)."""
    return hashlib.sha256(str(uuid.UUID(str(user_id))).encode()).digest()


@dataclass(frozen=True)
class PersonIds:
    """Every id that names the person: theirs, their entries', sessions' and
    visualizations' (the media keys are made from the visualization ids)."""

    user_id: uuid.UUID
    entry_ids: tuple[uuid.UUID, ...]
    session_ids: tuple[uuid.UUID, ...]
    visualization_ids: tuple[uuid.UUID, ...]

    def all(self) -> list[str]:
        return [
            str(i)
            for i in (self.user_id, *self.entry_ids, *self.session_ids, *self.visualization_ids)
        ]


class EraseRepository:
    """``EraseRepository(uow.session)``: the erasure's statements."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def person(self, user_id: uuid.UUID) -> PersonIds | None:
        """The person's ids, or None if no such user."""
        s = self.session
        if s.execute(text("SELECT 1 FROM users WHERE id = :u"), {"u": user_id}).first() is None:
            return None
        return PersonIds(
            user_id,
            _ids(s, "SELECT id FROM emotion_entries WHERE user_id = :u", user_id),
            _ids(s, "SELECT id FROM intake_sessions WHERE user_id = :u", user_id),
            _ids(s, "SELECT id FROM visualizations WHERE user_id = :u", user_id),
        )

    def is_erased(self, user_id: uuid.UUID) -> bool:
        return (
            self.session.execute(
                text("SELECT 1 FROM erased_users WHERE user_digest = :d"),
                {"d": user_digest(user_id)},
            ).first()
            is not None
        )

    def count_rows(self, person: PersonIds) -> dict[str, int]:
        """What ``delete_person`` would delete, by table (the dry run's report)."""
        counts = {
            table: _count(self.session, f"SELECT count(*) FROM {table} WHERE {column} = :u", person)
            for table, column in _CASCADED.items()
        }
        counts["users"] = 1
        counts["completion_events"] = _count(
            self.session,
            "SELECT count(*) FROM completion_events WHERE payload->>'user_id' = :t",
            person,
        )
        counts["analytics_refresh_queue"] = _count(
            self.session, "SELECT count(*) FROM analytics_refresh_queue WHERE user_id = :u", person
        )
        counts["model_calls"] = _count(self.session, f"SELECT count(*) {_MODEL_CALLS}", person)
        counts["operator_actions"] = len(self._audit_rows(person.all()))
        return {table: n for table, n in sorted(counts.items())}

    def delete_person(self, person: PersonIds, ref: str) -> dict[str, int]:
        """Delete every row naming the person (caller commits); rows by table.
        ``ref`` (their log reference) replaces their ids in operator_actions."""
        s = self.session
        counts = {
            table: _count(s, f"SELECT count(*) FROM {table} WHERE {column} = :u", person)
            for table, column in _CASCADED.items()
        }
        events, deliveries = s.execute(text(_DELETE_EVENTS), _params(person)).one()
        counts["completion_events"], counts["event_deliveries"] = int(events), int(deliveries)
        counts["model_calls"] = _rowcount(s, f"DELETE {_MODEL_CALLS}", person)
        # The delete trigger queues only rows that name a picture; a row whose worker
        # stored one and died before saving its URL has files too: queue those rows.
        s.execute(
            text(
                "INSERT INTO media_garbage (visualization_id) SELECT id FROM visualizations "
                "WHERE user_id = :u AND image_url IS NULL AND thumbnail_url IS NULL"
            ),
            _params(person),
        )
        counts["users"] = _rowcount(s, "DELETE FROM users WHERE id = :u", person)
        # After the cascade: the entries' delete trigger queued the person's days.
        counts["analytics_refresh_queue"] = _rowcount(
            s, "DELETE FROM analytics_refresh_queue WHERE user_id = :u", person
        )
        counts["operator_actions"] = self._scrub_audit(person.all(), ref)
        return {table: n for table, n in sorted(counts.items())}

    def tombstone(self, user_id: uuid.UUID, report: dict[str, Any]) -> None:
        write_tombstones(self.session.connection(), [(user_digest(user_id), report)])

    def update_tombstone(self, user_id: uuid.UUID, report: dict[str, Any]) -> None:
        self.session.execute(
            text("UPDATE erased_users SET report = :r WHERE user_digest = :d"),
            {"d": user_digest(user_id), "r": Jsonb(_counts_only(report))},
        )

    def _audit_rows(self, ids: list[str]) -> dict[int, list[str]]:
        """operator_actions rows whose target or detail names any of ``ids``, with the
        ids each names: one pass over the table, whatever the number of ids."""
        rows = self.session.execute(
            text(
                "SELECT a.id, array_agg(DISTINCT lower(m[1])) FROM operator_actions a, "
                "regexp_matches(coalesce(a.target, '') || ' ' || a.detail::text, :uuid, 'g') m "
                "WHERE lower(m[1]) = ANY(:ids) GROUP BY a.id"
            ),
            {"uuid": UUID_PATTERN, "ids": [i.lower() for i in ids]},
        )
        return {int(r[0]): list(r[1]) for r in rows}

    def _scrub_audit(self, ids: list[str], ref: str) -> int:
        rows = self._audit_rows(ids)
        for action_id, named in rows.items():
            pattern = "|".join(re.escape(i) for i in named)
            self.session.execute(
                text(
                    "UPDATE operator_actions SET "
                    "target = regexp_replace(target, :p, :r, 'gi'), "
                    "detail = regexp_replace(detail::text, :p, :r, 'gi')::jsonb "
                    "WHERE id = :id"
                ),
                {"p": pattern, "r": ref, "id": action_id},
            )
        return len(rows)


def erase_repository(uow: UnitOfWork) -> EraseRepository:
    """The repository on a unit of work's session."""
    return EraseRepository(uow.session)


# --- the tombstones across a restore (db/backup.py) ------------------------------------


def read_tombstones(conn: Connection) -> list[tuple[bytes, dict[str, Any]]]:
    """Every tombstone, or none if the database has no erased_users table (older than
    0011, or empty)."""
    if conn.execute(text("SELECT to_regclass('public.erased_users')")).scalar() is None:
        return []
    rows = conn.execute(text("SELECT user_digest, report FROM erased_users"))
    return [(bytes(r[0]), dict(r[1] or {})) for r in rows]


# NOT EXISTS as well as ON CONFLICT: a restore that failed half-way may have left an
# erased_users table without its primary key yet (pg_restore adds constraints last), and
# the tombstones are written back into it (db/backup.py).
_INSERT_TOMBSTONE = (
    "INSERT INTO erased_users (user_digest, report) SELECT :d, :r "
    "WHERE NOT EXISTS (SELECT 1 FROM erased_users WHERE user_digest = :d) "
    "ON CONFLICT DO NOTHING"
)
# The table as migration 0011 creates it: for a restore that failed before creating it.
_CREATE_ERASED_USERS = """
CREATE TABLE IF NOT EXISTS erased_users (
    user_digest bytea NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(),
    report jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT erased_users_pkey PRIMARY KEY (user_digest),
    CONSTRAINT erased_users_user_digest_check CHECK (length(user_digest) = 32)
)
"""


def write_tombstones(conn: Connection, tombstones: Iterable[tuple[bytes, dict[str, Any]]]) -> None:
    """Add the tombstones not there yet (the one INSERT every tombstone goes through)."""
    rows = [{"d": digest, "r": Jsonb(_counts_only(report))} for digest, report in tombstones]
    if rows:
        conn.execute(text(_INSERT_TOMBSTONE), rows)


def keep_tombstones(conn: Connection, tombstones: Iterable[tuple[bytes, dict[str, Any]]]) -> None:
    """Write the tombstones into whatever a failed restore left, creating erased_users
    if it is missing: the next restore reads them from there (db/backup.py)."""
    conn.execute(text(_CREATE_ERASED_USERS))
    write_tombstones(conn, tombstones)


def users_with_digests(conn: Connection, digests: Sequence[bytes]) -> list[uuid.UUID]:
    """The users a restore brought back although they were erased. One pass over users
    (a restore's, once): the digest is not indexed."""
    if not digests:
        return []
    rows = conn.execute(
        text("SELECT id FROM users WHERE sha256(convert_to(id::text, 'UTF8')) = ANY(:d)"),
        {"d": list(digests)},
    )
    return [r[0] for r in rows]


# --- helpers ---------------------------------------------------------------------------


def _params(person: PersonIds) -> dict[str, Any]:
    return {
        "u": person.user_id,
        "t": str(person.user_id),
        "e": list(person.entry_ids),
        "s": list(person.session_ids),
    }


def _ids(session: Session, sql: str, user_id: uuid.UUID) -> tuple[uuid.UUID, ...]:
    return tuple(r[0] for r in session.execute(text(sql), {"u": user_id}))


def _count(session: Session, sql: str, person: PersonIds) -> int:
    return int(session.execute(text(sql), _params(person)).scalar_one())


def _rowcount(session: Session, sql: str, person: PersonIds) -> int:
    result: Any = session.execute(text(sql), _params(person))
    return int(result.rowcount or 0)


def _counts_only(report: dict[str, Any]) -> dict[str, Any]:
    """A tombstone's report keeps numbers only (nested by store): no text, no ids."""
    kept: dict[str, Any] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            kept[str(key)] = _counts_only(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            kept[str(key)] = value
    return kept
