"""Erasure edge cases (issue 24.5): a run that crashed after the database transaction
is finished by running the command again (pictures through media_garbage, Redis swept
for the user id); a restore of a backup older than the tombstones' table migrates the
restored schema, keeps the tombstones and erases the person again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from db import backup, migrate
from db.engine import normalise_url
from db.repositories.erase import EraseRepository, user_digest
from tests.conftest import DatabaseFactory
from tests.integration.helpers import count, insert_entry, insert_user
from workers.messaging.redis_keys import queue_keys

pytestmark = pytest.mark.integration


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
