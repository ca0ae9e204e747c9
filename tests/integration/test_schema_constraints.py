"""The database itself rejects rows that break the spec's rules (raw SQL, no ORM)."""

from __future__ import annotations

import time
import uuid

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError

from tests.integration.helpers import count, insert_entry, insert_user

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "email",
    ["no-at-sign", "a@b", "a@b.c", "spaces in@example.com", "x@example.c0m", "a|b@example|com"],
)
def test_users_email_check_rejects_bad_addresses(engine: Engine, email: str) -> None:
    with engine.connect() as conn, pytest.raises(IntegrityError, match="users_email_check"):
        insert_user(conn, email)


def test_users_email_unique(engine: Engine) -> None:
    with engine.connect() as conn:
        insert_user(conn, "same@example.com")
        with pytest.raises(IntegrityError, match="users_email_key"):
            insert_user(conn, "same@example.com")


@pytest.mark.parametrize(
    ("intensity", "emotions", "constraint"),
    [
        ("1.01", ["joy"], "emotion_entries_intensity_check"),
        ("-0.01", ["joy"], "emotion_entries_intensity_check"),
        ("0.5", [], "emotions_not_empty"),
        ("0.5", ["joy", "boredom"], "emotion_entries_emotions_vocabulary"),
        ("0.5", ["JOY"], "emotion_entries_emotions_vocabulary"),
    ],
)
def test_entry_checks(engine: Engine, intensity: str, emotions: list[str], constraint: str) -> None:
    with engine.connect() as conn:
        user_id = insert_user(conn)
        with pytest.raises(IntegrityError, match=constraint):
            insert_entry(conn, user_id, emotions=emotions, intensity=intensity)


def test_entry_intensity_precision_is_two_decimals(engine: Engine) -> None:
    with engine.connect() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id, intensity="0.555")
        value = conn.execute(
            text("SELECT intensity FROM emotion_entries WHERE id = :i"), {"i": entry_id}
        ).scalar_one()
    assert str(value) == "0.56"


def test_entry_source_check(engine: Engine) -> None:
    with engine.connect() as conn:
        user_id = insert_user(conn)
        with pytest.raises(IntegrityError, match="emotion_entries_source_check"):
            insert_entry(conn, user_id, source="telepathy")


def test_entry_foreign_keys(engine: Engine) -> None:
    with engine.connect() as conn:
        with pytest.raises(IntegrityError, match="emotion_entries_user_id_fkey"):
            insert_entry(conn, uuid.uuid4())
        conn.rollback()
        user_id = insert_user(conn)
        with pytest.raises(IntegrityError, match="emotion_entries_intake_session_id_fkey"):
            insert_entry(conn, user_id, intake_session_id=uuid.uuid4())


def test_one_entry_per_intake_session(engine: Engine) -> None:
    with engine.connect() as conn:
        user_id = insert_user(conn)
        session_id = conn.execute(
            text(
                "INSERT INTO intake_sessions (user_id, initial_situation) VALUES (:u, 's') RETURNING id"
            ),
            {"u": user_id},
        ).scalar_one()
        insert_entry(conn, user_id, intake_session_id=session_id, source="intake_flow")
        with pytest.raises(IntegrityError, match="emotion_entries_intake_session_id_key"):
            insert_entry(conn, user_id, intake_session_id=session_id, source="intake_flow")


def _insert_visualization(conn: Connection, entry_id: object, user_id: object, **cols: str) -> None:
    names = ", ".join(["entry_id", "user_id", *cols])
    values = ", ".join([":e", ":u", *(f":{c}" for c in cols)])
    conn.execute(
        text(f"INSERT INTO visualizations ({names}) VALUES ({values})"),
        {"e": entry_id, "u": user_id, **cols},
    )


@pytest.mark.parametrize(
    ("cols", "constraint"),
    [
        ({"status": "done"}, "status_check"),
        ({"style": "cubist"}, "visualizations_style_check"),
    ],
)
def test_visualization_checks(engine: Engine, cols: dict[str, str], constraint: str) -> None:
    with engine.connect() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)
        with pytest.raises(IntegrityError, match=constraint):
            _insert_visualization(conn, entry_id, user_id, **cols)


def test_visualization_unique_entry_and_foreign_keys(engine: Engine) -> None:
    with engine.connect() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)
        _insert_visualization(conn, entry_id, user_id)
        with pytest.raises(IntegrityError, match="visualizations_entry_id_key"):
            _insert_visualization(conn, entry_id, user_id)
        conn.rollback()
        with pytest.raises(IntegrityError, match="visualizations_entry_id_fkey"):
            _insert_visualization(conn, uuid.uuid4(), insert_user(conn))
        conn.rollback()
        entry_id = insert_entry(conn, insert_user(conn))
        with pytest.raises(IntegrityError, match="visualizations_user_id_fkey"):
            _insert_visualization(conn, entry_id, uuid.uuid4())


def test_intake_session_checks(engine: Engine) -> None:
    with engine.connect() as conn:
        user_id = insert_user(conn)
        for sql, constraint in [
            (
                "INSERT INTO intake_sessions (user_id, initial_situation, current_step) VALUES (:u, 's', 0)",
                "intake_sessions_current_step_check",
            ),
            (
                "INSERT INTO intake_sessions (user_id, initial_situation, conversation_history) "
                "VALUES (:u, 's', '{\"a\": 1}')",
                "intake_sessions_history_is_array",
            ),
            (
                "INSERT INTO intake_sessions (user_id, initial_situation, is_complete) VALUES (:u, 's', true)",
                "intake_sessions_completed_at_check",
            ),
            (
                "INSERT INTO intake_sessions (user_id, initial_situation) VALUES (gen_random_uuid(), 's')",
                "intake_sessions_user_id_fkey",
            ),
        ]:
            with pytest.raises(IntegrityError, match=constraint):
                conn.execute(text(sql), {"u": user_id})
            conn.rollback()
            user_id = insert_user(conn)


def test_analytics_unique_period_and_checks(engine: Engine) -> None:
    sql = (
        "INSERT INTO emotion_analytics (user_id, period_start, period_end, emotion_counts, "
        "average_intensity, total_entries) VALUES (:u, :s, :e, '{}', :a, :t)"
    )
    with engine.connect() as conn:
        user_id = insert_user(conn)
        conn.execute(
            text(sql), {"u": user_id, "s": "2026-01-01", "e": "2026-01-31", "a": 0.5, "t": 1}
        )
        cases = [
            (
                {"s": "2026-01-01", "e": "2026-01-31", "a": 0.5, "t": 1},
                "emotion_analytics_user_id_period_start_period_end_key",
            ),
            (
                {"s": "2026-02-02", "e": "2026-02-01", "a": 0.5, "t": 1},
                "emotion_analytics_period_check",
            ),
            (
                {"s": "2026-03-01", "e": "2026-03-01", "a": 1.5, "t": 1},
                "emotion_analytics_average_intensity_check",
            ),
            (
                {"s": "2026-04-01", "e": "2026-04-01", "a": 0.5, "t": -1},
                "emotion_analytics_total_entries_check",
            ),
        ]
        conn.commit()
        for params, constraint in cases:
            with pytest.raises(IntegrityError, match=constraint):
                conn.execute(text(sql), {"u": user_id, **params})
            conn.rollback()
        with pytest.raises(IntegrityError, match="emotion_analytics_user_id_fkey"):
            conn.execute(
                text(sql),
                {"u": uuid.uuid4(), "s": "2026-05-01", "e": "2026-05-01", "a": 0.5, "t": 1},
            )


def test_api_keys_unique_hash_and_default_scopes(engine: Engine) -> None:
    sql = "INSERT INTO api_keys (user_id, key_hash, name) VALUES (:u, :h, 'k') RETURNING scopes"
    with engine.connect() as conn:
        user_id = insert_user(conn)
        scopes = conn.execute(text(sql), {"u": user_id, "h": "hash-1"}).scalar_one()
        assert scopes == ["read", "write"]
        with pytest.raises(IntegrityError, match="api_keys_key_hash_key"):
            conn.execute(text(sql), {"u": user_id, "h": "hash-1"})
        conn.rollback()
        with pytest.raises(IntegrityError, match="api_keys_user_id_fkey"):
            conn.execute(text(sql), {"u": uuid.uuid4(), "h": "hash-2"})


def test_deleting_a_user_cascades_everywhere(engine: Engine) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        other_id = insert_user(conn)
        session_id = conn.execute(
            text(
                "INSERT INTO intake_sessions (user_id, initial_situation) VALUES (:u, 's') RETURNING id"
            ),
            {"u": user_id},
        ).scalar_one()
        for owner in (user_id, other_id):
            entry_id = insert_entry(conn, owner)
            _insert_visualization(conn, entry_id, owner)
            conn.execute(
                text(
                    "INSERT INTO emotion_analytics (user_id, period_start, period_end, emotion_counts) "
                    "VALUES (:u, '2026-01-01', '2026-01-01', '{}')"
                ),
                {"u": owner},
            )
            conn.execute(
                text("INSERT INTO api_keys (user_id, key_hash, name) VALUES (:u, :h, 'k')"),
                {"u": owner, "h": f"h-{owner}"},
            )
        insert_entry(conn, user_id, intake_session_id=session_id, source="intake_flow")
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": user_id})
    with engine.connect() as conn:
        for table in (
            "emotion_entries",
            "visualizations",
            "intake_sessions",
            "emotion_analytics",
            "api_keys",
        ):
            assert count(conn, table, "user_id = :u", u=user_id) == 0, table
            assert count(conn, table, "user_id = :u", u=other_id) == (
                0 if table == "intake_sessions" else 1
            ), table


def test_deleting_an_entry_cascades_to_its_visualization(engine: Engine) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)
        _insert_visualization(conn, entry_id, user_id)
        conn.execute(text("DELETE FROM emotion_entries WHERE id = :e"), {"e": entry_id})
        assert count(conn, "visualizations", "entry_id = :e", e=entry_id) == 0


def test_deleting_an_intake_session_keeps_the_entry(engine: Engine) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        session_id = conn.execute(
            text(
                "INSERT INTO intake_sessions (user_id, initial_situation) VALUES (:u, 's') RETURNING id"
            ),
            {"u": user_id},
        ).scalar_one()
        entry_id = insert_entry(conn, user_id, intake_session_id=session_id, source="intake_flow")
        conn.execute(text("DELETE FROM intake_sessions WHERE id = :s"), {"s": session_id})
        kept = conn.execute(
            text("SELECT intake_session_id FROM emotion_entries WHERE id = :e"), {"e": entry_id}
        ).one()
    assert kept[0] is None


@pytest.mark.parametrize("table", ["users", "emotion_entries", "visualizations", "intake_sessions"])
def test_updated_at_changes_on_any_update(engine: Engine, table: str) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)
        if table == "visualizations":
            _insert_visualization(conn, entry_id, user_id)
        if table == "intake_sessions":
            conn.execute(
                text("INSERT INTO intake_sessions (user_id, initial_situation) VALUES (:u, 's')"),
                {"u": user_id},
            )
    key = "id" if table == "users" else "user_id"
    column = {
        "users": "name",
        "emotion_entries": "notes",
        "visualizations": "summary",
        "intake_sessions": "final_summary",
    }[table]
    with engine.connect() as conn:
        before = conn.execute(
            text(f"SELECT updated_at FROM {table} WHERE {key} = :u"), {"u": user_id}
        ).scalar_one()
    time.sleep(0.01)
    with engine.begin() as conn:
        conn.execute(
            text(f"UPDATE {table} SET {column} = 'changed' WHERE {key} = :u"), {"u": user_id}
        )
    with engine.connect() as conn:
        after = conn.execute(
            text(f"SELECT updated_at FROM {table} WHERE {key} = :u"), {"u": user_id}
        ).scalar_one()
    assert after > before


def test_server_defaults(engine: Engine) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        row = conn.execute(
            text("SELECT is_active, is_verified, created_at IS NOT NULL FROM users WHERE id = :u"),
            {"u": user_id},
        ).one()
        assert tuple(row) == (True, False, True)
        entry_id = insert_entry(conn, user_id)
        conn.execute(
            text("INSERT INTO visualizations (entry_id, user_id) VALUES (:e, :u)"),
            {"e": entry_id, "u": user_id},
        )
        viz = conn.execute(
            text("SELECT status, style FROM visualizations WHERE entry_id = :e"), {"e": entry_id}
        ).one()
        assert tuple(viz) == ("pending", "abstract")
        source = conn.execute(
            text("SELECT source FROM emotion_entries WHERE id = :e"), {"e": entry_id}
        ).scalar_one()
        assert source == "manual"
