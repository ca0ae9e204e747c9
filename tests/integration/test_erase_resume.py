"""Erasure edge cases (issue 24.5): a run that crashed after the database transaction
is finished by running the command again (pictures through media_garbage, Redis swept
for the user id); a restore of a backup older than the tombstones' table migrates the
restored schema, keeps the tombstones and erases the person again; a restore that
failed half-way keeps them for the next; ledger rows go by entry and session too; Redis
lists are read in pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from db import backup, migrate
from db.engine import normalise_url
from db.repositories.erase import EraseRepository, user_digest
from tests.conftest import DatabaseFactory
from tests.integration.helpers import count, insert_entry, insert_user
from workers.messaging.erasure import _text, erase_from_redis
from workers.messaging.redis_keys import queue_keys

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "workers.entrypoints.cli"]


def test_erase_again_after_a_crash_finishes_pictures_and_messages(
    db_url: str, redis_server_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    engine = create_engine(normalise_url(db_url))
    try:
        with engine.begin() as conn:
            user = insert_user(conn)
            entry = insert_entry(conn, user)
            vid = conn.execute(
                text(
                    "INSERT INTO visualizations (entry_id, user_id, status) "
                    "VALUES (:e, :u, 'completed') RETURNING id"
                ),
                {"e": entry, "u": user},
            ).scalar_one()
        media = tmp_path / "media"
        files = [
            media / "visualizations" / f"{vid}.png",
            media / "visualizations" / f"{vid}_thumb.webp",
        ]
        for path in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"picture")
        keys = queue_keys(redis_namespace, "visualizations")
        client = redis.Redis.from_url(redis_server_url)
        body = {
            "actor_name": "entry.created",
            "args": [{"entry_id": str(entry), "user_id": str(user)}],
        }
        client.hset(keys.ready_bodies, "m1", json.dumps(body))
        client.rpush(keys.ready, "m1")
        # The first run got through its transaction, then died: rows gone, tombstone
        # written, the pictures and the message still there.
        with Session(engine) as session:
            repo = EraseRepository(session)
            person = repo.person(user)
            assert person is not None
            repo.delete_person(person, "ref_x")
            repo.tombstone(user, {})
            session.commit()
        with engine.connect() as conn:
            assert count(conn, "media_garbage", "visualization_id = :v", v=vid) == 1

        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "workers.entrypoints.cli",
                "user",
                "erase",
                str(user),
                "--yes",
                "--json",
            ],
            env={
                **os.environ,
                "DATABASE_URL": db_url,
                "REDIS_URL": redis_server_url,
                "REDIS_NAMESPACE": redis_namespace,
                "MEDIA_DIR": str(media),
                "PROVIDER": "local",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["already_erased"] and not report["found"]
        assert report["media"]["files_deleted"] == 2 and report["redis"]["messages"] == 1
        assert not any(path.exists() for path in files)
        assert client.llen(keys.ready) == 0 and client.hlen(keys.ready_bodies) == 0
        with engine.connect() as conn:
            assert count(conn, "media_garbage") == 0
            assert (
                count(conn, "operator_actions", "action = 'user_erase'") == 0
            )  # no rows: no record
    finally:
        engine.dispose()


@pytest.mark.slow
def test_restoring_a_backup_older_than_the_tombstones_erases_the_person_again(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    old_name, old_url = database_factory.create(migrated=False)
    name, url = database_factory.create()
    try:
        migrate.upgrade(old_url, "0010")  # before erased_users existed
        old = create_engine(normalise_url(old_url))
        with old.begin() as conn:
            gone, kept = insert_user(conn), insert_user(conn)
            insert_entry(conn, gone)
        old.dispose()
        older = backup.backup(old_url, tmp_path / "older.dump")

        current = create_engine(normalise_url(url))
        with Session(current) as session:
            EraseRepository(session).tombstone(gone, {"rows": {"users": 1}})
            session.commit()
        current.dispose()

        report = backup.restore(url, older, clean_first=True)
        assert (report.migrated, report.tombstones, report.erased_again) == (True, 1, 1)
        engine = create_engine(normalise_url(url))
        with engine.connect() as conn:
            assert count(conn, "users", "id = :u", u=gone) == 0
            assert count(conn, "emotion_entries", "user_id = :u", u=gone) == 0
            assert count(conn, "users", "id = :u", u=kept) == 1
            digests = [
                bytes(r[0]) for r in conn.execute(text("SELECT user_digest FROM erased_users"))
            ]
            assert digests == [user_digest(gone)]
        engine.dispose()
        migrate.check(url)  # the restored database is at head
    finally:
        database_factory.drop(old_name)
        database_factory.drop(name)


def test_erase_removes_the_ledger_rows_of_the_persons_entries_whoever_was_charged(
    db_url: str,
) -> None:
    """A paid call for one of the person's entries or intake sessions may have been
    charged to another user_id (or none): the erasure deletes it by entry and session
    too; another person's calls stay. Their completion events go, with the deliveries
    counted, through the payload's index."""
    engine = create_engine(normalise_url(db_url))
    try:
        with engine.begin() as conn:
            user, other = insert_user(conn), insert_user(conn)
            entry, others_entry = insert_entry(conn, user), insert_entry(conn, other)
            session = conn.execute(
                text(
                    "INSERT INTO intake_sessions (user_id, initial_situation) "
                    "VALUES (:u, 'a day') RETURNING id"
                ),
                {"u": user},
            ).scalar_one()
            calls = (
                (user, None, None),  # charged to the person
                (other, entry, None),  # the person's entry, charged to someone else
                (None, None, session),  # the person's intake session, charged to no one
                (other, others_entry, None),  # another person's: stays
            )
            for charged, for_entry, for_session in calls:
                conn.execute(
                    text(
                        "INSERT INTO model_calls (user_id, entry_id, intake_session_id, "
                        "model, kind, outcome) VALUES (:u, :e, :s, 'm', 'analysis', 'ok')"
                    ),
                    {"u": charged, "e": for_entry, "s": for_session},
                )
            event = conn.execute(
                text(
                    "INSERT INTO completion_events (kind, payload) "
                    "VALUES ('visualization.completed', CAST(:p AS jsonb)) RETURNING id"
                ),
                {"p": json.dumps({"user_id": str(user), "entry_id": str(entry)})},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO event_deliveries (event_id, subscriber) "
                    "VALUES (:e, 'queue'), (:e, 'webhook')"
                ),
                {"e": event},
            )
        with Session(engine) as session_:
            repo = EraseRepository(session_)
            person = repo.person(user)
            assert person is not None
            preview = repo.count_rows(person)
            rows = repo.delete_person(person, "ref_x")
            session_.commit()
        assert preview["model_calls"] == rows["model_calls"] == 3
        assert preview["completion_events"] == rows["completion_events"] == 1
        assert rows["event_deliveries"] == 2
        with engine.connect() as conn:
            assert count(conn, "model_calls") == 1
            assert count(conn, "model_calls", "entry_id = :e", e=others_entry) == 1
            assert count(conn, "completion_events", "id = :e", e=event) == 0
            assert count(conn, "event_deliveries", "event_id = :e", e=event) == 0
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_failed_restore_keeps_the_tombstones_for_the_next_restore(
    database_factory: DatabaseFactory, tmp_path: Path
) -> None:
    """A restore --clean of a truncated dump fails in one line (exit 1) after the
    database was emptied: the tombstones read before are written back into what the
    load left and kept in a file beside the backup, so a following restore of an older
    backup still erases the person, from the database's copy or, without it, from the
    file alone."""
    name, url = database_factory.create()
    try:
        engine = create_engine(normalise_url(url))
        with engine.begin() as conn:
            gone, kept = insert_user(conn), insert_user(conn)
            insert_entry(conn, gone)
        older = backup.backup(url, tmp_path / "older.dump")  # the person still in it
        with Session(engine) as session:
            repo = EraseRepository(session)
            person = repo.person(gone)
            assert person is not None
            repo.delete_person(person, "ref_x")
            repo.tombstone(gone, {"rows": {"users": 1}})
            session.commit()
        whole = backup.backup(url, tmp_path / "whole.dump").read_bytes()
        truncated = tmp_path / "truncated.dump"
        truncated.write_bytes(whole[: len(whole) // 2])
        engine.dispose()  # the restore must not wait for this test's idle connections

        failed = subprocess.run(
            [*CLI, "restore", "--clean", "--yes", str(truncated)],
            env={**os.environ, "DATABASE_URL": url},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "Traceback" not in failed.stderr and failed.stderr.count("\n") == 1, failed.stderr
        kept_at = backup.tombstone_file(url, truncated)
        assert str(kept_at) in failed.stderr and "written back" in failed.stderr
        assert backup.read_tombstone_file(kept_at) == [(user_digest(gone), {"rows": {"users": 1}})]
        with engine.begin() as conn:  # the load's leftovers hold the tombstone...
            digests = conn.execute(text("SELECT user_digest FROM erased_users")).scalars()
            assert [bytes(d) for d in digests] == [user_digest(gone)]
            conn.execute(text("DROP TABLE erased_users"))  # ...as if that write had failed
        engine.dispose()

        report = backup.restore(url, older, clean_first=True)  # the file alone keeps it
        assert (report.tombstones, report.erased_again) == (1, 1)
        assert not kept_at.exists()  # applied: the database holds it again
        with engine.connect() as conn:
            assert count(conn, "users", "id = :u", u=gone) == 0
            assert count(conn, "emotion_entries", "user_id = :u", u=gone) == 0
            assert count(conn, "users", "id = :u", u=kept) == 1
            assert count(conn, "erased_users") == 1
        engine.dispose()
    finally:
        database_factory.drop(name)


def test_redis_lists_are_read_in_pages_and_queue_orders_are_not_read(
    redis_server_url: str, redis_namespace: str
) -> None:
    """A list of other values (a completion event list) is walked a page at a time, to
    its end: an item naming the person past the first pages goes, the rest stays. A
    queue's list (message ids, a .msgs hash beside it) is not read: its bodies are."""
    reads: list[tuple[str, int, int]] = []

    class Recording(redis.Redis):
        def lrange(self, name: Any, start: int, end: int) -> Any:
            reads.append((name.decode() if isinstance(name, bytes) else name, start, end))
            return super().lrange(name, start, end)

    client = Recording.from_url(redis_server_url)
    person = str(uuid.uuid4())
    events = f"{redis_namespace}:completion-events"
    others = [json.dumps({"user_id": str(uuid.uuid4())}) for _ in range(2_500)]
    client.rpush(events, *others[:2_100], json.dumps({"user_id": person}), *others[2_100:])
    keys = queue_keys(redis_namespace, "visualizations")
    client.rpush(keys.ready, "m-other", "m-person")
    client.hset(keys.ready_bodies, mapping={"m-other": "{}", "m-person": person})

    counted = erase_from_redis(client, redis_namespace, [person], dry_run=True)
    assert (counted.other_values, counted.total_messages) == (1, 1)
    assert client.llen(events) == 2_501
    assert {name for name, _, _ in reads} == {events}  # the queue's order is not read
    assert all(0 <= start <= end < start + 1_000 for _, start, end in reads), reads
    assert len(reads) == 3  # 2,501 items: three pages

    erased = erase_from_redis(client, redis_namespace, [person])
    assert (erased.other_values, erased.total_messages) == (1, 1)
    assert [_text(i) for i in client.lrange(events, 0, -1)] == others
    assert client.lrange(keys.ready, 0, -1) == [b"m-other"]
    assert client.hkeys(keys.ready_bodies) == [b"m-other"]
