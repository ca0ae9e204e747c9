"""Analytics follow deletes and edits made by upstream with plain SQL: the triggers on
emotion_entries queue the (person, day) in the same transaction, and
drain_analytics_refresh_queue leaves emotion_analytics equal to a full recompute."""

from __future__ import annotations

import random
import threading
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.periods import PERIOD_KINDS, period_containing
from domain.vocabulary import EMOTIONS
from tests.integration.helpers import count, insert_entry, insert_user
from workers.services import analytics as analytics_service
from workers.services.analytics import drain_analytics_refresh_queue

pytestmark = pytest.mark.integration

COLUMNS = (
    "user_id, period_start, period_end, emotion_counts, average_intensity, total_entries, "
    "most_common_emotions, insights"
)
FIRST, LAST = date(2026, 9, 1), date(2026, 11, 30)


def _factory(engine: Engine) -> Any:
    sessions = make_session_factory(engine)
    return lambda: UnitOfWork(sessions)


def _rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(text(f"SELECT {COLUMNS} FROM emotion_analytics ORDER BY 1, 2, 3"))
        ]


def _full(engine: Engine, users: list[uuid.UUID]) -> None:
    with _factory(engine)() as uow:
        for kind in PERIOD_KINDS:
            start = period_containing(kind, FIRST - timedelta(days=400)).start
            end = period_containing(kind, LAST + timedelta(days=400)).end_exclusive
            uow.analytics.recompute(kind, users, start, end)
        uow.commit()


def _truth(engine: Engine, users: list[uuid.UUID]) -> list[tuple[Any, ...]]:
    """What a full recompute from scratch gives, computed apart (rows put back after)."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE analytics_kept AS SELECT * FROM emotion_analytics"))
        conn.execute(text("DELETE FROM emotion_analytics"))
    _full(engine, users)
    truth = _rows(engine)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM emotion_analytics"))
        conn.execute(text("INSERT INTO emotion_analytics SELECT * FROM analytics_kept"))
        conn.execute(text("DROP TABLE analytics_kept"))
    return truth


def _at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _person(engine: Engine, days: list[date]) -> tuple[uuid.UUID, list[uuid.UUID]]:
    with engine.begin() as conn:
        user = insert_user(conn)
        entries = [
            insert_entry(conn, user, emotions=["joy", "sadness"][: 1 + i % 2], created_at=_at(d))
            for i, d in enumerate(days)
        ]
    return user, entries


def _queued(engine: Engine) -> list[tuple[uuid.UUID, date]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT user_id, day FROM analytics_refresh_queue ORDER BY id"))
        return [(r.user_id, r.day) for r in rows]


def test_a_deleted_entry_leaves_analytics_equal_to_a_full_recompute(engine: Engine) -> None:
    # The only entry of Wednesday 4 Nov (its day row must go), inside a run of weeks
    # (the following weeks' comparisons and streaks change).
    days = [date(2026, 10, 26) + timedelta(days=7 * i) for i in range(4)] + [date(2026, 11, 4)]
    user, entries = _person(engine, days)
    other, _ = _person(engine, days)
    _full(engine, [user, other])
    before = _rows(engine)
    with engine.begin() as conn:  # upstream, with plain SQL
        conn.execute(text("DELETE FROM emotion_entries WHERE id = :id"), {"id": entries[-1]})
    assert _queued(engine) == [(user, date(2026, 11, 4))]
    assert _rows(engine) == before  # stale until the drain
    assert _rows(engine) != _truth(engine, [user, other])

    assert drain_analytics_refresh_queue(_factory(engine), 100) == 1
    assert _rows(engine) == _truth(engine, [user, other])
    assert _queued(engine) == []
    assert drain_analytics_refresh_queue(_factory(engine), 100) == 0


def test_an_edit_refreshes_the_old_and_the_new_periods(engine: Engine) -> None:
    days = [date(2026, 9, 7), date(2026, 10, 5), date(2026, 10, 6), date(2026, 11, 2)]
    user, entries = _person(engine, days)
    _full(engine, [user])
    with engine.begin() as conn:
        # Moved to another week and month, and re-tagged.
        conn.execute(
            text(
                "UPDATE emotion_entries SET created_at = :at, emotions = '{anger,fear}', "
                "intensity = 0.90 WHERE id = :id"
            ),
            {"id": entries[1], "at": _at(date(2026, 11, 18))},
        )
        # Only what the analytics do not read.
        conn.execute(
            text("UPDATE emotion_entries SET situation = 'edited', notes = 'n' WHERE id = :id"),
            {"id": entries[2]},
        )
    assert sorted(_queued(engine)) == [(user, date(2026, 10, 5)), (user, date(2026, 11, 18))]
    assert _rows(engine) != _truth(engine, [user])
    assert drain_analytics_refresh_queue(_factory(engine), 100) == 2
    assert _rows(engine) == _truth(engine, [user])


def test_an_entry_moved_to_another_person_refreshes_both(engine: Engine) -> None:
    a, entries = _person(engine, [date(2026, 10, 1), date(2026, 10, 2)])
    b, _ = _person(engine, [date(2026, 10, 20)])
    _full(engine, [a, b])
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE emotion_entries SET user_id = :b WHERE id = :id"),
            {"b": b, "id": entries[0]},
        )
    assert sorted(_queued(engine)) == sorted([(a, date(2026, 10, 1)), (b, date(2026, 10, 1))])
    drain_analytics_refresh_queue(_factory(engine), 100)
    assert _rows(engine) == _truth(engine, [a, b])


def test_a_bulk_delete_queues_each_day_once_and_a_deleted_person_nothing(engine: Engine) -> None:
    user, _ = _person(engine, [date(2026, 10, 1)] * 30 + [date(2026, 10, 2)] * 20)
    gone, _ = _person(engine, [date(2026, 10, 1)] * 10)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM emotion_entries WHERE user_id = :u"), {"u": user})
        conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": gone})  # cascades
    assert sorted(_queued(engine)) == [(user, date(2026, 10, 1)), (user, date(2026, 10, 2))]


def test_the_queue_row_is_written_with_the_upstream_change_or_not_at_all(engine: Engine) -> None:
    _user, entries = _person(engine, [date(2026, 10, 1)])
    with engine.connect() as conn:
        conn.execute(text("DELETE FROM emotion_entries WHERE id = :id"), {"id": entries[0]})
        conn.rollback()
    assert _queued(engine) == []


def test_drain_is_bounded_and_runners_never_share_rows(engine: Engine) -> None:
    users = [_person(engine, [date(2026, 10, 1), date(2026, 10, 2)])[0] for _ in range(6)]
    _full(engine, users)
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM emotion_entries WHERE created_at < :at"),
            {"at": _at(date(2026, 10, 2), 0)},
        )
    assert len(_queued(engine)) == 6
    factory = _factory(engine)
    # A runner holding the three oldest rows: another skips them (no wait) and takes the rest.
    with factory() as holder:
        held = holder.analytics.take_queued_refreshes(3)
        assert len(held) == 3
        assert drain_analytics_refresh_queue(factory, 100) == 3
        assert drain_analytics_refresh_queue(factory, 100) == 0
    assert [row for row in _queued(engine)] == [(r.user_id, r.day) for r in held]
    assert drain_analytics_refresh_queue(factory, 2) == 2  # the limit bounds one call
    assert drain_analytics_refresh_queue(factory, 2) == 1
    assert _rows(engine) == _truth(engine, users)


@pytest.mark.parametrize("max_statements", [8, 1], ids=["ranges", "merged"])
def test_random_edits_and_deletes_with_concurrent_runners_equal_a_full_recompute(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, max_statements: int
) -> None:
    """Per-range statements, and (1) one statement over the union of the ranges."""
    monkeypatch.setattr(analytics_service, "DRAIN_MAX_STATEMENTS", max_statements)
    rng = random.Random(20)
    emotions = sorted(EMOTIONS)
    users = []
    entries: list[uuid.UUID] = []
    for _ in range(8):
        days = [FIRST + timedelta(days=rng.randrange(90)) for _ in range(25)]
        user, ids = _person(engine, days)
        users.append(user)
        entries += ids
    _full(engine, users)
    factory = _factory(engine)
    stop = threading.Event()
    drained: list[int] = []
    errors: list[BaseException] = []

    def runner() -> None:
        try:
            while not stop.is_set():
                drained.append(drain_analytics_refresh_queue(factory, 7))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    rng.shuffle(entries)
    for entry in entries[:120]:
        with engine.begin() as conn:
            op = rng.randrange(4)
            if op == 0:
                conn.execute(text("DELETE FROM emotion_entries WHERE id = :id"), {"id": entry})
            elif op == 1:
                at = _at(FIRST + timedelta(days=rng.randrange(90)), rng.randrange(24))
                conn.execute(
                    text("UPDATE emotion_entries SET created_at = :at WHERE id = :id"),
                    {"at": at, "id": entry},
                )
            elif op == 2:
                conn.execute(
                    text("UPDATE emotion_entries SET emotions = CAST(:e AS text[]) WHERE id = :id"),
                    {"e": rng.sample(emotions, rng.randrange(1, 4)), "id": entry},
                )
            else:
                conn.execute(
                    text("UPDATE emotion_entries SET intensity = :i WHERE id = :id"),
                    {"i": rng.randrange(101) / 100, "id": entry},
                )
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors
    drained.append(drain_analytics_refresh_queue(factory, 10_000))
    with engine.connect() as conn:
        assert count(conn, "analytics_refresh_queue") == 0
    assert _rows(engine) == _truth(engine, users)
    assert sum(drained) > 0
