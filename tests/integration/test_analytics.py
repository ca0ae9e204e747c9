"""emotion_analytics on real PostgreSQL: every field on hand-made data, boundaries,
idempotency, overlapping runs, and incremental == full (hypothesis)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.analytics import STREAK_CAP, shift_periods
from domain.periods import PERIOD_KINDS, period_containing
from domain.vocabulary import EMOTIONS
from tests.integration.helpers import insert_entry, insert_user, refresh_analytics

pytestmark = pytest.mark.integration

COLUMNS = (
    "period_start, period_end, emotion_counts, average_intensity, total_entries, "
    "most_common_emotions, insights"
)


def _rows(engine: Engine, user_id: uuid.UUID, kind: str | None = None) -> list[tuple[Any, ...]]:
    where = {
        "day": "period_end = period_start",
        "week": "period_end - period_start = 6",
        "month": "period_end - period_start > 6",
        None: "true",
    }[kind]
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    f"SELECT {COLUMNS} FROM emotion_analytics WHERE user_id = :u AND {where} "
                    "ORDER BY period_start, period_end"
                ),
                {"u": user_id},
            )
        ]


def _full(uow: UnitOfWork, user_ids: list[uuid.UUID], first: date, last: date) -> None:
    with uow:
        for kind in PERIOD_KINDS:
            start = period_containing(kind, first).start
            end = period_containing(kind, last).end_exclusive
            uow.analytics.recompute(kind, user_ids, start, end)
        uow.commit()


def _computed_at(engine: Engine) -> dict[Any, tuple[datetime, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, computed_at, xmin::text FROM emotion_analytics"))
        return {r.id: (r.computed_at, r.xmin) for r in rows}


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_fields_ties_rounding_and_duplicates(engine: Engine, uow: UnitOfWork) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
        for emotions, intensity in (
            (["joy", "fear"], "0.33"),
            (["anger", "joy", "joy"], "0.34"),
            (["fear", "anger", "sadness"], "0.34"),
        ):
            insert_entry(
                conn,
                user,
                emotions=emotions,
                intensity=intensity,
                created_at=_at("2026-03-04T12:00:00+00:00"),
            )
    _full(uow, [user], date(2026, 3, 4), date(2026, 3, 4))
    (day,) = _rows(engine, user, "day")
    assert day[2] == {"joy": 2, "fear": 2, "anger": 2, "sadness": 1}  # joy listed twice: once
    assert day[3] == Decimal("0.34")  # 1.01 / 3 = 0.3366...
    assert day[4] == 3
    assert day[5] == ["anger", "fear", "joy"]  # three-way tie: by name


def test_counts_and_top_three_agree_with_a_count_in_python(engine: Engine, uow: UnitOfWork) -> None:
    """emotion_counts and most_common_emotions against an independent count, with every
    emotion, counts of one to three digits, ties and duplicates, for each period kind."""
    rng = random.Random(14)
    weights = [60, 30, 30, 12, 6, 3, 2, 1, 1, 0.2]  # popular and rare, in vocabulary order
    entries = []
    for i in range(600):
        emotions = rng.choices(EMOTIONS, weights=weights, k=rng.randint(1, 3))
        moment = datetime(2026, 2, 1, tzinfo=UTC) + timedelta(minutes=97 * i)  # Feb to early Mar
        entries.append({"emotions": emotions, "at": moment})
    with engine.begin() as conn:
        user = insert_user(conn)
        for entry in entries:
            insert_entry(conn, user, emotions=entry["emotions"], created_at=entry["at"])
    _full(uow, [user], date(2026, 2, 1), date(2026, 3, 31))
    for kind in PERIOD_KINDS:
        expected: dict[date, Counter[str]] = {}
        for entry in entries:
            start = period_containing(kind, entry["at"].date()).start
            expected.setdefault(start, Counter()).update(set(entry["emotions"]))
        rows = {r[0]: (r[2], r[5]) for r in _rows(engine, user, kind)}
        assert rows.keys() == expected.keys()
        for start, counts in expected.items():
            top = sorted(counts, key=lambda e: (-counts[e], e))[:3]
            assert rows[start] == (dict(counts), top), (kind, start)
    month = _rows(engine, user, "month")[0][2]
    assert max(month.values()) >= 100 and min(month.values()) < 10  # 1 to 3 digits
    assert len(month) == len(EMOTIONS)


def test_finding_empty_periods_reads_only_the_batchs_rows(engine: Engine, uow: UnitOfWork) -> None:
    """Rows of periods left empty are found among the batch's own users' rows, whether
    or not emotion_analytics has statistics. (A plain ``user_id = ANY(batch)`` made a
    batch of hundreds of users look like the whole of a never-analyzed table, and the
    planner read every row in the range, of all users, through the period index.)"""
    from db.analytics_statement import RECOMPUTE_AND_DROP_EMPTY_SQL, parameters

    first, end, weeks = date(2026, 1, 5), date(2026, 4, 6), 13
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (email, hashed_password, name) "
                "SELECT 'p' || g || '@example.com', 'x', 'P' FROM generate_series(1, 2000) g"
            )
        )
        conn.execute(
            text(
                "INSERT INTO emotion_entries (user_id, situation, emotions, intensity, created_at) "
                "SELECT u.id, 'x', ARRAY['joy'], 0.5, CAST(:first AS timestamptz) + w * interval '1 week' "
                "FROM users u, generate_series(0, :weeks - 1) w"
            ),
            {"first": first, "weeks": weeks},
        )
        users = list(conn.execute(text("SELECT id FROM users ORDER BY id")).scalars())
    with uow:
        uow.analytics.recompute("week", users, first, end)
        uow.commit()
    batch, mine = users[:250], users[0]
    with engine.begin() as conn:
        conn.execute(  # its first week is now empty: its row must go
            text("DELETE FROM emotion_entries WHERE user_id = :u AND created_at < :t"),
            {"u": mine, "t": first + timedelta(days=7)},
        )

    def rows_read_in_deletion() -> int:
        with engine.connect() as conn:
            plan = conn.execute(
                text("EXPLAIN (ANALYZE, FORMAT JSON) " + RECOMPUTE_AND_DROP_EMPTY_SQL),
                parameters("week", batch, first, end),
            ).scalar_one()
            conn.rollback()
        return _rows_read(plan[0]["Plan"], "emotion_analytics", under="gone")

    # The batch's own rows, then the one to delete again by id; not the 2000 users' rows.
    assert rows_read_in_deletion() <= len(batch) * weeks + 1  # never analyzed
    with engine.begin() as conn:
        conn.execute(text("ANALYZE emotion_analytics"))
    assert rows_read_in_deletion() <= len(batch) * weeks + 1  # with statistics
    with uow:
        uow.analytics.recompute("week", batch, first, end)
        uow.commit()
    kept = [r[0] for r in _rows(engine, mine, "week")]
    assert kept == [first + timedelta(weeks=w) for w in range(1, weeks)]  # the empty one went


def _rows_read(node: dict[str, Any], table: str, under: str, inside: bool = False) -> int:
    """Rows the scans of ``table`` below the CTE ``under`` returned or filtered out."""
    inside = inside or node.get("Subplan Name") == f"CTE {under}"
    read = 0
    if inside and node.get("Relation Name") == table and "Scan" in node["Node Type"]:
        loops = node.get("Actual Loops", 1)
        read += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
    for child in node.get("Plans", []):
        read += _rows_read(child, table, under, inside)
    return read


def test_midnight_iso_weeks_month_ends_and_leap_day(engine: Engine, uow: UnitOfWork) -> None:
    moments = [
        "2024-02-29T23:59:59.999+00:00",  # leap day, Thursday
        "2024-03-01T00:00:00+00:00",  # next day, next month, same ISO week
        "2024-03-03T23:59:59+00:00",  # Sunday: still that ISO week
        "2024-03-04T00:00:00+00:00",  # Monday: a new ISO week
        "2024-03-01T01:30:00+02:00",  # 23:30 UTC on Feb 29: stored with an offset
    ]
    with engine.begin() as conn:
        user = insert_user(conn)
        for moment in moments:
            insert_entry(conn, user, created_at=_at(moment))
    _full(uow, [user], date(2024, 2, 1), date(2024, 3, 31))
    days = {(r[0], r[1]): r[4] for r in _rows(engine, user, "day")}
    assert days == {
        (date(2024, 2, 29), date(2024, 2, 29)): 2,
        (date(2024, 3, 1), date(2024, 3, 1)): 1,
        (date(2024, 3, 3), date(2024, 3, 3)): 1,
        (date(2024, 3, 4), date(2024, 3, 4)): 1,
    }
    weeks = {(r[0], r[1]): r[4] for r in _rows(engine, user, "week")}
    assert weeks == {
        (date(2024, 2, 26), date(2024, 3, 3)): 4,
        (date(2024, 3, 4), date(2024, 3, 10)): 1,
    }
    months = {(r[0], r[1]): r[4] for r in _rows(engine, user, "month")}
    assert months == {
        (date(2024, 2, 1), date(2024, 2, 29)): 2,
        (date(2024, 3, 1), date(2024, 3, 31)): 3,
    }


def test_iso_week_across_the_new_year(engine: Engine, uow: UnitOfWork) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
        insert_entry(conn, user, created_at=_at("2026-01-01T08:00:00+00:00"))  # Thursday
        insert_entry(conn, user, created_at=_at("2025-12-29T00:00:00+00:00"))  # its Monday
    _full(uow, [user], date(2025, 12, 1), date(2026, 1, 31))
    weeks = _rows(engine, user, "week")
    assert [(w[0], w[1], w[4]) for w in weeks] == [(date(2025, 12, 29), date(2026, 1, 4), 2)]
    assert len(_rows(engine, user, "month")) == 2


def test_insights_compare_with_the_previous_period(engine: Engine, uow: UnitOfWork) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
        for moment, emotions, intensity in (
            ("2026-11-02T10:00:00+00:00", ["joy"], "0.30"),
            ("2026-11-03T10:00:00+00:00", ["joy", "fear"], "0.50"),
            ("2026-11-10T10:00:00+00:00", ["joy", "anger"], "0.90"),
            ("2026-11-11T10:00:00+00:00", ["anger"], "0.80"),
            ("2026-11-12T10:00:00+00:00", ["anger", "sadness"], "0.70"),
        ):
            insert_entry(conn, user, emotions=emotions, intensity=intensity, created_at=_at(moment))
    _full(uow, [user], date(2026, 11, 1), date(2026, 11, 30))
    first_week, second_week = _rows(engine, user, "week")
    assert first_week[6] == ["2 entries this week; none the previous week."]
    assert second_week[6] == [
        "3 entries this week, up from 2.",
        "Fear fell from 1 to 0.",
        "New this week: anger, sadness.",
        "Average intensity rose from 0.40 to 0.80.",
        "2 weeks in a row with entries.",
    ]
    days = _rows(engine, user, "day")
    assert days[1][6] == [
        "1 entry this day, as many as the previous day.",
        "New this day: fear.",
        "Average intensity rose from 0.30 to 0.50.",
        "2 days in a row with entries.",
    ]
    assert days[2][6] == ["1 entry this day; none the previous day."]  # Nov 9 was empty
    assert "Joy rose" not in " ".join(days[3][6])
    assert days[3][6][1] == "Joy fell from 1 to 0."
    assert days[4][6][-1] == "3 days in a row with entries."


def test_streak_is_capped(engine: Engine, uow: UnitOfWork) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
        for day in range(12):
            insert_entry(
                conn,
                user,
                intensity="0.50",
                created_at=datetime(2026, 5, 1, 12, tzinfo=UTC) + timedelta(days=day),
            )
    _full(uow, [user], date(2026, 5, 1), date(2026, 5, 12))
    days = _rows(engine, user, "day")
    assert days[6][6][-1] == "7 days in a row with entries."
    assert days[7][6][-1] == f"{STREAK_CAP}+ days in a row with entries."
    assert days[11][6][-1] == f"{STREAK_CAP}+ days in a row with entries."
    assert days[11][6][-2] == "Average intensity held steady around 0.50."


def test_empty_periods_lose_their_row_and_runs_are_idempotent(
    engine: Engine, uow: UnitOfWork
) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
        other = insert_user(conn)
        gone = insert_entry(conn, user, created_at=_at("2026-06-10T10:00:00+00:00"))
        insert_entry(conn, user, created_at=_at("2026-06-20T10:00:00+00:00"))
        insert_entry(conn, other, created_at=_at("2026-06-10T10:00:00+00:00"))
    _full(uow, [user, other], date(2026, 6, 1), date(2026, 6, 30))
    before = _rows(engine, user)
    stamps = _computed_at(engine)
    _full(uow, [user, other], date(2026, 6, 1), date(2026, 6, 30))
    assert _rows(engine, user) == before  # idempotent
    assert _computed_at(engine) == stamps  # and unchanged rows are not rewritten
    with uow:
        week = period_containing("week", date(2026, 6, 10)).start
        rewritten = uow.analytics.recompute("week", [user, other], week, date(2026, 6, 22))
    assert rewritten == 0
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM emotion_entries WHERE id = :e"), {"e": gone})
    _full(uow, [user, other], date(2026, 6, 1), date(2026, 6, 30))
    after = _rows(engine, user)
    assert {r[0] for r in after} == {date(2026, 6, 20), date(2026, 6, 15), date(2026, 6, 1)}
    assert len(_rows(engine, other)) == 3  # the other person's rows are untouched


def test_two_overlapping_runs_agree_with_one(engine: Engine) -> None:
    factory = make_session_factory(engine)
    with engine.begin() as conn:
        users = [insert_user(conn) for _ in range(40)]
        for i in range(600):
            insert_entry(
                conn,
                users[i % 40],
                emotions=[EMOTIONS[i % 10], EMOTIONS[(i * 3) % 10]],
                intensity=f"0.{i % 10}",
                created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=7 * i),
            )
    from domain.messages import AnalyticsRecompute
    from workers.services import analytics as service

    errors: list[BaseException] = []
    message = AnalyticsRecompute(
        period="week", period_start=date(2025, 12, 29), period_end=date(2026, 7, 1)
    )

    def run(parallel: int) -> None:
        try:
            service.recompute(lambda: UnitOfWork(factory), message, parallel=parallel)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    # One sequential run and one with three batches at a time, overlapping.
    threads = [threading.Thread(target=run, args=(p,)) for p in (1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    concurrent = [_rows(engine, u, "week") for u in users]
    service.recompute(lambda: UnitOfWork(factory), message)
    assert [_rows(engine, u, "week") for u in users] == concurrent
    assert sum(len(r) for r in concurrent) > 40


BASE = datetime(2024, 2, 20, tzinfo=UTC)  # spans a leap day and a month end
operations = st.lists(
    st.tuples(
        st.booleans(),  # insert (True) or delete (False)
        st.integers(0, 40 * 24),  # hours after BASE
        st.lists(st.sampled_from(EMOTIONS), min_size=1, max_size=3, unique=True),
        st.integers(0, 100),  # intensity in hundredths
        st.integers(0, 10**6),  # which entry to delete
    ),
    min_size=1,
    max_size=14,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_incremental_equals_full_recomputation(
    engine: Engine, uow: UnitOfWork, ops: list[Any]
) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
    live: list[tuple[uuid.UUID, datetime]] = []
    for is_insert, hours, emotions, hundredths, pick in ops:
        if is_insert or not live:
            moment = BASE + timedelta(hours=hours)
            with engine.begin() as conn:
                entry = insert_entry(
                    conn,
                    user,
                    emotions=emotions,
                    intensity=f"{hundredths / 100:.2f}",
                    created_at=moment,
                )
            live.append((entry, moment))
            refresh_analytics(engine, user, moment)  # queued as the entry's completion does
        else:
            entry, moment = live.pop(pick % len(live))
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM emotion_entries WHERE id = :e"), {"e": entry})
            assert refresh_analytics(engine) == 1  # queued by the delete trigger
    incremental = _rows(engine, user)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM emotion_analytics WHERE user_id = :u"), {"u": user})
    first = BASE.date() - timedelta(days=1)
    last = (BASE + timedelta(hours=40 * 24)).date() + timedelta(days=1)
    with uow:
        for kind in PERIOD_KINDS:
            uow.analytics.recompute(
                kind, [user], shift_periods(kind, first, -1), shift_periods(kind, last, 2)
            )
        uow.commit()
    assert incremental == _rows(engine, user)


def _cli(args: list[str], db_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(Path.cwd())}
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_exit_codes_and_summary(db_url: str, engine: Engine) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
        insert_entry(conn, user, created_at=datetime.now(UTC))
    ok = _cli(["analytics", "recompute", "--period", "week", "--inline", "--quiet"], db_url)
    assert ok.returncode == 0, ok.stderr
    assert (
        ok.stdout.startswith("analytics recompute: period=week") and "users=1 rows=1" in ok.stdout
    )
    assert (
        _cli(
            ["analytics", "recompute", "--period", "week", "--from", "2026-02-30"], db_url
        ).returncode
        == 2
    )
    backwards = _cli(
        [
            "analytics",
            "recompute",
            "--period",
            "day",
            "--from",
            "2026-05-02",
            "--to",
            "2026-05-01",
            "--inline",
        ],
        db_url,
    )
    assert backwards.returncode == 2 and "is after --to" in backwards.stderr  # bad input
    down = _cli(
        ["analytics", "recompute", "--period", "day", "--inline"],
        "postgresql://nobody:hunter22@127.0.0.1:1/none",
    )
    assert down.returncode == 1 and "database unavailable" in down.stderr
    assert "hunter22" not in down.stderr + down.stdout
