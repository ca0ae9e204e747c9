"""The console's read model on real PostgreSQL: failed rows paged by reason, outcomes
per minute, analytics freshness per period kind, a session's entry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, text

from db.uow import UnitOfWork
from tests.integration.helpers import insert_entry, insert_user, refresh_analytics

pytestmark = pytest.mark.integration


def _visualization(
    engine: Engine, entry_id: uuid.UUID, user_id: uuid.UUID, **values: object
) -> None:
    cols = ", ".join(["entry_id", "user_id", *values])
    params = ", ".join([":entry_id", ":user_id", *(f":{k}" for k in values)])
    with engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO visualizations ({cols}) VALUES ({params})"),
            {"entry_id": entry_id, "user_id": user_id, **values},
        )


def _entries(
    engine: Engine, n: int, situation: str = "A situation"
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        return user_id, [
            insert_entry(conn, user_id, situation=f"{situation} {i}") for i in range(n)
        ]


def test_failed_rows_are_paged_newest_first_and_filtered_by_reason(
    uow: UnitOfWork, engine: Engine
) -> None:
    user_id, ids = _entries(engine, 5, situation="x" * 400)
    reasons = ["safety block", "safety block", "timeout", None]
    with engine.begin() as conn:
        for minutes, (entry_id, reason) in enumerate(zip(ids, reasons, strict=False)):
            conn.execute(
                text(
                    "INSERT INTO visualizations (entry_id, user_id, status, error_message, "
                    "processing_completed_at) VALUES (:e, :u, 'failed', :r, "
                    "now() - make_interval(mins => :m))"
                ),
                {"e": entry_id, "u": user_id, "r": reason, "m": minutes},
            )
    _visualization(engine, ids[4], user_id, status="completed")  # not failed: never listed

    with uow:
        counts = uow.console.failure_reasons()
        everything = uow.console.failed_rows(None, limit=10)
        page_two = uow.console.failed_rows(None, limit=2, offset=2)
        safety = uow.console.failed_rows(["safety block"], limit=10)
        unexplained = uow.console.failed_rows([None], limit=10)
        nothing = uow.console.failed_rows([], limit=10)

    assert counts == [("safety block", 2), ("timeout", 1), (None, 1)]
    assert [r.entry_id for r in everything] == ids[:4]  # newest failure first
    assert [r.entry_id for r in page_two] == ids[2:4]
    assert [r.entry_id for r in safety] == ids[:2]
    assert [r.entry_id for r in unexplained] == [ids[3]]
    assert nothing == []
    first = everything[0]
    assert (first.user_id, first.style, first.reason) == (user_id, "abstract", "safety block")
    assert first.situation == "x" * 160  # cut: a page lists many rows


def test_outcomes_per_minute_count_the_last_hour_only(uow: UnitOfWork, engine: Engine) -> None:
    user_id, ids = _entries(engine, 6)
    finished = [
        ("completed", 0),
        ("completed", 0),
        ("failed", 0),
        ("completed", 5),
        ("failed", 59.5),
        ("completed", 61),
    ]
    with engine.begin() as conn:
        for entry_id, (status, minutes) in zip(ids, finished, strict=True):
            conn.execute(
                text(
                    "INSERT INTO visualizations (entry_id, user_id, status, processing_completed_at) "
                    "VALUES (:e, :u, :s, now() - make_interval(secs => :sec))"
                ),
                {"e": entry_id, "u": user_id, "s": status, "sec": minutes * 60 + 1},
            )
    with uow:
        outcomes = uow.console.outcomes_per_minute(60)
    assert [(o.minutes_ago, o.completed, o.failed) for o in outcomes] == [
        (0, 2, 1),
        (5, 1, 0),
        (59, 0, 1),
    ]


def test_analytics_freshness_tells_the_period_kinds_apart(uow: UnitOfWork, engine: Engine) -> None:
    with engine.begin() as conn:
        first, second = insert_user(conn), insert_user(conn)
        insert_entry(conn, first, created_at=datetime(2026, 3, 4, 12, tzinfo=UTC))
        insert_entry(conn, second, created_at=datetime(2026, 3, 4, 13, tzinfo=UTC))
    for user_id in (first, second):
        refresh_analytics(engine, user_id, datetime(2026, 3, 4, 12, tzinfo=UTC))
    with engine.begin() as conn:  # an old month row: counted, but not near the last write
        conn.execute(
            text(
                "UPDATE emotion_analytics SET computed_at = now() - interval '3 hours' "
                "WHERE user_id = :u AND period_end - period_start > 6"
            ),
            {"u": first},
        )
    with uow:
        fresh = {f.kind: f for f in uow.console.analytics_freshness()}
    assert set(fresh) == {"day", "week", "month"}
    assert (fresh["day"].rows, fresh["day"].people, fresh["day"].written_near_last) == (2, 2, 2)
    assert (fresh["week"].rows, fresh["week"].written_near_last) == (2, 2)
    assert (fresh["month"].rows, fresh["month"].people, fresh["month"].written_near_last) == (
        2,
        2,
        1,
    )
    with uow:
        assert uow.console.analytics_freshness()[0].last_written_at <= datetime.now(UTC)


def test_entry_of_session(uow: UnitOfWork, engine: Engine) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
    with uow:
        session_id = uow.intake.create(user_id, "A talk")
        uow.commit()
    with uow:
        assert uow.console.entry_of_session(session_id) is None
    with engine.begin() as conn:
        entry_id = insert_entry(conn, user_id, intake_session_id=session_id, source="intake_flow")
    with uow:
        assert uow.console.entry_of_session(session_id) == entry_id


def test_row_states_of_the_entries_a_dead_letter_names(uow: UnitOfWork, engine: Engine) -> None:
    user_id, (failed, queued, unknown) = _entries(engine, 3)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO visualizations (entry_id, user_id, status, error_message) "
                "VALUES (:f, :u, 'failed', 'request rejected (400)'), (:q, :u, 'pending', NULL)"
            ),
            {"f": failed, "q": queued, "u": user_id},
        )
    with uow:
        states = uow.console.row_states([failed, queued, unknown])
        none = uow.console.row_states([])
    assert states == {failed: ("failed", "request rejected (400)"), queued: ("pending", None)}
    assert none == {}
