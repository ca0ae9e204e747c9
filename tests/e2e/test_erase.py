"""Erasing a person (issue 24.5): after `emotionviz user erase ID --yes`, none of the
person's ids (theirs, their entries', sessions', visualizations') is found in the
database (the whole dump), Redis (every key and value of the namespace), the media
store (file names) or the worker's logs; and after restoring a backup taken before the
erasure, still nowhere. Another person's data, checked the same way, is all there (the
checks can fail)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import text

from db.backup import backup
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness
from workers.logging import log_ref
from workers.messaging.erasure import _text
from workers.messaging.redis_keys import queue_keys

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOG_KEY = "erase-test-log-key-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def h(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    folder = tmp_path_factory.mktemp("erase")
    with running_harness(
        database_factory, redis_server_url, folder, env={"LOG_PSEUDONYM_KEY": LOG_KEY}
    ) as harness:
        yield harness


def _cli(h: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**h.env, "EMOTIONVIZ_OPERATOR": "erase-test"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _person(h: Harness, marker: str) -> dict[str, list[str]]:
    """A person with entries in every state, an intake session, an API key, analytics,
    paid calls (two charged to others), completion events, an audit row naming an entry, queued, delayed and
    dead-lettered messages; the completed entry went through the real worker."""
    done, user = h.make_entry(marker)
    h.publish(done, user)
    assert h.wait_for(done)["status"] == "completed"
    ids: dict[str, list[str]] = {"user": [str(user)], "entry": [str(done)]}
    with h.engine.begin() as conn:

        def one(sql: str, **params: Any) -> str:
            return str(conn.execute(text(sql), {"u": user, **params}).scalar_one())

        session = one(
            "INSERT INTO intake_sessions (user_id, initial_situation) VALUES (:u, 'a day') "
            "RETURNING id"
        )
        ids["session"] = [session]
        for status in ("pending", "processing", "failed"):
            entry = one(
                "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
                "VALUES (:u, :s, '{joy}', 0.5) RETURNING id",
                s=f"{marker} {status}",
            )
            ids["entry"].append(entry)
            conn.execute(
                text(
                    "INSERT INTO visualizations (entry_id, user_id, status, error_message, "
                    "gemini_analysis) VALUES (:e, :u, :st, :err, CAST(:raw AS jsonb))"
                ),
                {
                    "e": entry,
                    "u": user,
                    "st": status,
                    "err": f"failed on entry {entry}" if status == "failed" else None,
                    "raw": json.dumps({"raw": f"about {entry}"}),
                },
            )
        ids["visualization"] = [
            str(r[0])
            for r in conn.execute(
                text("SELECT id FROM visualizations WHERE user_id = :u"), {"u": user}
            )
        ]
        conn.execute(
            text("INSERT INTO api_keys (user_id, key_hash, name) VALUES (:u, :k, 'k')"),
            {"u": user, "k": uuid.uuid4().hex},
        )
        conn.execute(
            text(
                "INSERT INTO model_calls (user_id, entry_id, model, kind, outcome) "
                "VALUES (:u, :e, 'm', 'analysis', 'ok')"
            ),
            {"u": user, "e": done},
        )
        # Paid calls for the person's entry and session charged to someone else or to
        # no one: erased by entry and session (the dump check below finds their ids).
        conn.execute(
            text(
                "INSERT INTO model_calls (user_id, entry_id, intake_session_id, model, kind, "
                "outcome) VALUES (:other, :e, NULL, 'm', 'image', 'ok'), "
                "(NULL, NULL, :s, 'm', 'intake', 'ok')"
            ),
            {"other": uuid.uuid4(), "e": ids["entry"][1], "s": session},
        )
        conn.execute(
            text(
                "INSERT INTO operator_actions (operator, source, action, target, detail) "
                "VALUES ('op', 'cli', 'replay', :t, CAST(:d AS jsonb))"
            ),
            {"t": str(done), "d": json.dumps({"entry_ids": [str(done)]})},
        )
    return ids


def _messages(h: Harness, ids: dict[str, list[str]]) -> None:
    """Queued, delayed and dead-lettered messages naming the person (no worker runs)."""
    user, entries = ids["user"][0], ids["entry"]
    h.publish(uuid.UUID(entries[1]), uuid.UUID(user))  # queued
    client = h.redis
    keys = queue_keys(h.namespace, "visualizations")
    now_ms = int(time.time() * 1000)
    for target, score in ((keys.delayed, now_ms + 3_600_000), (keys.dead, now_ms)):
        redis_id = str(uuid.uuid4())
        body = {
            "queue_name": "visualizations",
            "actor_name": "entry.created",
            "args": [{"entry_id": entries[3], "user_id": user}],
            "kwargs": {},
            "options": {"redis_message_id": redis_id},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": score,
        }
        client.hset(f"{target}.msgs", redis_id, json.dumps(body))
        client.zadd(target, {redis_id: score})


def _dump_text(h: Harness, path: Path) -> str:
    backup(h.db_url, path)
    with gzip.open(path, "rt", errors="replace") as f:
        return f.read()


def _redis_text(client: redis.Redis, namespace: str) -> str:
    parts: list[str] = []
    for key in client.scan_iter(match=f"{namespace}*"):
        kind = _text(client.type(key))
        parts.append(_text(key))
        if kind == "string":
            parts.append(repr(client.get(key)))
        elif kind == "hash":
            parts.append(repr(client.hgetall(key)))
        elif kind == "list":
            parts.append(repr(client.lrange(key, 0, -1)))
        elif kind == "set":
            parts.append(repr(client.smembers(key)))
        elif kind == "zset":
            parts.append(repr(client.zrange(key, 0, -1)))
    return "\n".join(parts)


def _media_text(h: Harness) -> str:
    return "\n".join(str(p) for p in h.media_dir.rglob("*"))


def _hits(haystack: str, ids: dict[str, list[str]]) -> list[str]:
    lowered = haystack.lower()
    return [f"{kind} {i}" for kind, values in ids.items() for i in values if i in lowered]


def test_an_erased_person_is_found_nowhere_even_after_a_restore(h: Harness, tmp_path: Path) -> None:
    marker = "erase" + uuid.uuid4().hex[:8]
    gone = _person(h, marker)
    kept_entry, kept_user = h.make_entry(marker + "k")
    h.publish(kept_entry, kept_user)
    assert h.wait_for(kept_entry)["status"] == "completed"
    with h.engine.connect() as conn:
        kept_vid = str(
            conn.execute(
                text("SELECT id FROM visualizations WHERE entry_id = :e"), {"e": kept_entry}
            ).scalar_one()
        )
    kept = {"user": [str(kept_user)], "entry": [str(kept_entry)], "visualization": [kept_vid]}
    h.stop_workers()  # the logs are written; the messages below stay queued
    _messages(h, gone)
    older = tmp_path / "before.dump"
    assert _cli(h, "backup", str(older)).returncode == 0

    # Before: the person is everywhere (so the checks below can fail).
    assert len(_hits(_dump_text(h, tmp_path / "a.sql.gz"), gone)) == sum(map(len, gone.values()))
    assert _hits(_redis_text(h.redis, h.namespace), gone)
    assert _hits(_media_text(h), {"v": gone["visualization"]})
    logs = h.log_path.read_text(errors="replace")
    assert log_ref(gone["entry"][0], LOG_KEY) in logs  # the worker logged the entry...
    assert not _hits(logs, gone)  # ...by its reference, never its id

    preview = _cli(h, "user", "erase", gone["user"][0])
    assert preview.returncode == 2, preview.stderr
    assert preview.stderr.count("\n") == 1 and "--yes" in preview.stderr
    assert "would erase" in preview.stdout

    erased = _cli(h, "user", "erase", gone["user"][0], "--yes", "--json")
    assert erased.returncode == 0, erased.stderr
    report = json.loads(erased.stdout)
    rows = report["postgresql"]["rows"]
    assert rows["users"] == 1 and rows["emotion_entries"] == 4 and rows["visualizations"] == 4
    assert rows["intake_sessions"] == 1 and rows["api_keys"] == 1 and rows["model_calls"] >= 3
    assert rows["completion_events"] >= 1 and rows["operator_actions"] == 1
    assert report["media"]["files_deleted"] >= 2  # the picture and its thumbnail
    assert report["redis"]["messages"] == 3  # queued, delayed, dead
    assert report["log_ref"] == log_ref(gone["user"][0], LOG_KEY)

    def nowhere(label: str) -> None:
        dump = _dump_text(h, tmp_path / f"{label}.sql.gz")
        places = {
            "postgresql": dump,
            "redis": _redis_text(h.redis, h.namespace),
            "media": _media_text(h),
            "logs": h.log_path.read_text(errors="replace"),
        }
        found = {place: _hits(haystack, gone) for place, haystack in places.items()}
        assert not any(found.values()), (label, found)
        assert len(_hits(dump, kept)) == 3, label  # the other person is all there
        assert _hits(places["media"], {"v": kept["visualization"]}), label

    nowhere("after erase")
    again = _cli(h, "user", "erase", gone["user"][0], "--yes", "--json")  # resumable, idempotent
    assert again.returncode == 0 and json.loads(again.stdout)["already_erased"], again.stderr

    restored = _cli(h, "restore", str(older), "--clean", "--yes")
    assert restored.returncode == 0, restored.stderr
    assert "1 people the backup held erased again" in restored.stdout, restored.stdout
    nowhere("after restoring the older backup")

    missing = _cli(h, "user", "erase", str(uuid.uuid4()), "--yes")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1, missing.stderr
