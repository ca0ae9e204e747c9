"""The plans of what runs on a timer or on an operator's refresh (issue 20): with
planner statistics made realistic (30,000 entries, most visualized long ago, analysed),
each statement reads an index, and a small part of it (the planner's estimate of the
rows it reads is at most a tenth of the table), never a sequential scan of
visualizations, emotion_entries or intake_sessions. A plan check, not a timing: scripts/bench_periodic.py
times the same statements on ten million entries (docs/benchmarks.md).

Each statement is captured as the product sends it (the repository method, through a
cursor hook), then EXPLAINed with its own parameters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from db.uow import UnitOfWork
from workers.observability.snapshot import read_rows

ENTRIES = 30_000
LARGE = ("visualizations", "emotion_entries", "intake_sessions")


@pytest.fixture
def realistic(engine: Engine) -> Engine:
    """A few hundred people's history: most entries completed long ago, a few failed,
    pending, processing (one lease expired), some finished in the last hour; intake
    sessions mostly complete. Analysed, so the planner knows the table is large."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, email, hashed_password, name) "
                "SELECT md5('u' || n)::uuid, 'p' || n || '@plans.example.com', 'x', 'P' "
                "FROM generate_series(0, 299) n"
            )
        )
        conn.execute(
            text(
                "INSERT INTO emotion_entries (id, user_id, situation, emotions, intensity, "
                "created_at) SELECT md5('e' || g)::uuid, md5('u' || (g % 300))::uuid, "
                "'situation ' || g, ARRAY['joy'], 0.5, "
                "now() - (:n - g) * interval '30 minutes' FROM generate_series(0, :n - 1) g"
            ),
            {"n": ENTRIES},
        )
        conn.execute(
            text(
                "INSERT INTO visualizations (entry_id, user_id, status, error_message, "
                "processing_started_at, processing_completed_at, lease_expires_at, "
                "created_at, updated_at) "
                "SELECT md5('e' || g)::uuid, md5('u' || (g % 300))::uuid, s, "
                "CASE WHEN s = 'failed' THEN 'image: 503 UNAVAILABLE' END, "
                "CASE WHEN s = 'processing' THEN now() - interval '20 minutes' END, "
                "CASE WHEN s IN ('completed', 'failed') THEN c + interval '9 seconds' END, "
                "CASE WHEN s = 'processing' THEN now() - interval '10 minutes' END, c, c "
                "FROM (SELECT g, now() - (:n - g) * interval '30 minutes' AS c, "
                "CASE WHEN g % 1000 = 1 THEN 'pending' WHEN g % 1000 = 2 THEN 'processing' "
                "WHEN g % 100 = 3 THEN 'failed' ELSE 'completed' END AS s "
                "FROM generate_series(0, :n - 1) g) x"
            ),
            {"n": ENTRIES},
        )
        history = json.dumps([{"step": 1, "question": "What happened?", "answer": "A lot"}])
        conn.execute(
            text(
                "INSERT INTO intake_sessions (user_id, initial_situation, "
                "conversation_history, is_complete, completed_at, updated_at) "
                "SELECT md5('u' || (n % 300))::uuid, 'situation', CAST(:h AS jsonb), "
                "n % 50 <> 0, CASE WHEN n % 50 <> 0 THEN now() END, "
                "now() - interval '1 hour' FROM generate_series(0, 9999) n"
            ),
            {"h": history},
        )
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
    return engine


@pytest.fixture
def captured(realistic: Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def hook(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(realistic, "before_cursor_execute", hook)
    yield seen
    event.remove(realistic, "before_cursor_execute", hook)


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def _plans(engine: Engine, statements: list[tuple[str, Any]]) -> list[list[dict[str, Any]]]:
    plans = []
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            for sql, parameters in statements:
                cursor.execute("EXPLAIN (FORMAT JSON) " + sql, parameters)
                plans.append(list(_walk(cursor.fetchone()[0][0]["Plan"])))
    finally:
        raw.rollback()
        raw.close()
    return plans


READS: dict[str, Callable[[UnitOfWork], Any]] = {
    "status snapshot (status, console, metrics)": read_rows,
    "console overview: outcomes per minute": lambda uow: uow.console.outcomes_per_minute(60),
    "console failures: first page": lambda uow: uow.console.failed_rows(None, limit=50),
    "dead letters: their rows": lambda uow: uow.console.row_states(
        [uuid.UUID(int=n) for n in range(200)]
    ),
    "reconcile: due intake turns": lambda uow: uow.intake.due_turns(300, 5000),
}


@pytest.mark.parametrize("name", list(READS))
def test_periodic_reads_use_indexes_not_sequential_scans(
    name: str, realistic: Engine, uow: UnitOfWork, captured: list[tuple[str, Any]]
) -> None:
    with uow:
        READS[name](uow)
    statements = [(sql, p) for sql, p in captured if sql.lstrip().upper().startswith("SELECT")]
    assert statements, "the read sent no SELECT"
    with realistic.connect() as conn:
        sizes = {
            table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
            for table in LARGE
        }
    for (sql, _), nodes in zip(statements, _plans(realistic, statements), strict=True):
        seq = [n["Relation Name"] for n in nodes if n["Node Type"] == "Seq Scan"]
        assert not set(seq) & set(LARGE), f"{name}: sequential scan of {seq} in {sql}"
        on_large = [
            n
            for n in nodes
            if n.get("Relation Name") in LARGE
            and n["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan")
        ]
        assert on_large, f"{name}: no index scan of a large table in {sql}"
        # An index, and a small part of it: not a walk of every row's entry (GROUP BY
        # status over the whole status index was an index-only scan of every row).
        for node in on_large:
            table = node["Relation Name"]
            assert node["Plan Rows"] <= sizes[table] // 10, (
                f"{name}: reads ~{node['Plan Rows']} of {sizes[table]} {table} rows in {sql}"
            )
