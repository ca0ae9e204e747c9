"""The retention purge (issue 24.5): `emotionviz retention run` trims old completed rows'
raw responses to what the product reads, deletes old failed rows (the entry stays) with
their dead letters and old operator actions, a batch per transaction, and leaves what is
younger; each statement is served by its index."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, text

from db.repositories.retention import _STATEMENTS
from tests.integration.helpers import count, insert_entry, insert_user
from workers.messaging.redis_keys import queue_keys

pytestmark = pytest.mark.integration

RAW = {"candidates": ["the model's whole answer"], "analysis": {"summary": "kept"}}
PICTURE = {
    "model_text": "a long raw answer",
    "width": 64,
    "height": 64,
    "bytes": 9,
    "mime_type": "image/png",
}


def _row(engine: Engine, user: uuid.UUID, status: str, age_days: float) -> uuid.UUID:
    with engine.begin() as conn:
        entry = insert_entry(conn, user)
        conn.execute(
            text(
                "INSERT INTO visualizations (entry_id, user_id, status, gemini_analysis, "
                "nanobanana_response, processing_completed_at) VALUES (:e, :u, :s, "
                "CAST(:g AS jsonb), CAST(:n AS jsonb), now() - make_interval(days => :d))"
            ),
            {
                "e": entry,
                "u": user,
                "s": status,
                "g": json.dumps(RAW),
                "n": json.dumps(PICTURE),
                "d": age_days,
            },
        )
    return entry


def _run(db_url: str, redis_url: str, namespace: str, *args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_url,
        "REDIS_NAMESPACE": namespace,
        "RETENTION_RAW_RESPONSES_DAYS": "30",
        "RETENTION_FAILED_DAYS": "30",
        "RETENTION_OPERATOR_ACTIONS_DAYS": "30",
        "RETENTION_BATCH": "2",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", "retention", "run", "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return dict(json.loads(proc.stdout))


def test_retention_run_purges_only_what_is_older_in_batches(
    engine: Engine, db_url: str, redis_server_url: str, redis_namespace: str
) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
        conn.execute(
            text(
                "INSERT INTO operator_actions (operator, source, action, at) VALUES "
                "('op', 'cli', 'old', now() - interval '40 days'), ('op', 'cli', 'new', now())"
            )
        )
    old_done = [_row(engine, user, "completed", 40) for _ in range(3)]
    new_done = _row(engine, user, "completed", 1)
    old_failed = [_row(engine, user, "failed", 40) for _ in range(3)]
    new_failed = _row(engine, user, "failed", 1)
    client = redis.Redis.from_url(redis_server_url)
    dead = queue_keys(redis_namespace, "visualizations").dead
    for entry in (old_failed[0], new_failed):
        body = {
            "actor_name": "entry.created",
            "args": [{"entry_id": str(entry), "user_id": str(user)}],
        }
        client.hset(f"{dead}.msgs", str(entry), json.dumps(body))
        client.zadd(dead, {str(entry): int(time.time() * 1000)})

    planned = _run(db_url, redis_server_url, redis_namespace, "--dry-run")
    assert {k: v["rows"] for k, v in planned["kinds"].items()} == {
        "raw_responses": 3,
        "failed_rows": 3,
        "operator_actions": 1,
        "model_calls": 0,
    }
    with engine.connect() as conn:
        assert count(conn, "visualizations", "status = 'failed'") == 4  # a dry run changes nothing

    report = _run(db_url, redis_server_url, redis_namespace)
    assert report["kinds"]["raw_responses"]["rows"] == 3
    assert report["kinds"]["raw_responses"]["batches"] == 2  # RETENTION_BATCH=2
    assert report["kinds"]["failed_rows"]["rows"] == 3
    assert report["kinds"]["operator_actions"]["rows"] == 1
    assert report["dead_letters"] == 1
    with engine.connect() as conn:
        rows = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                text("SELECT entry_id, gemini_analysis, nanobanana_response FROM visualizations")
            )
        }
        assert count(conn, "emotion_entries", "id = ANY(:e)", e=old_failed) == 3  # entries stay
        assert count(conn, "operator_actions", "action = 'new'") == 1
        assert count(conn, "operator_actions", "action = 'old'") == 0
    for entry in old_done:
        assert rows[entry] == (
            {"analysis": {"summary": "kept"}},
            {"width": 64, "height": 64, "bytes": 9, "mime_type": "image/png"},
        )
    assert rows[new_done] == (RAW, PICTURE)
    assert new_failed in rows and not set(old_failed) & set(rows)
    assert client.hkeys(f"{dead}.msgs") == [str(new_failed).encode()]
    again = _run(db_url, redis_server_url, redis_namespace)
    assert again["total"] == 0

    # Each batch statement can be served by its index (the planner proves the partial
    # index's predicate). The finished rows' index (0004) serves the raw walk as well
    # on a table this small: dropped here, in a transaction rolled back.
    with engine.connect() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        conn.execute(text("DROP INDEX idx_visualizations_finished_at"))
        for kind, index in (
            ("raw_responses", "idx_visualizations_raw_responses"),
            ("failed_rows", "idx_visualizations_failed_at"),
            ("operator_actions", "idx_operator_actions_at"),
            ("model_calls", "idx_model_calls_at"),
        ):
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    text("EXPLAIN " + _STATEMENTS[kind]),
                    {"cutoff": "2000-01-01", "n": 10, "facts": ["width"]},
                )
            )
            assert index in plan, (kind, plan)
        conn.rollback()
