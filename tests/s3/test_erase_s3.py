"""`emotionviz user erase` with pictures in an S3 bucket (SeaweedFS): the person's
pictures and thumbnails are deleted from the bucket, another person's stay, and the
report names the store (issue 24.5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import insert_entry, insert_user
from tests.s3.conftest import s3_settings
from workers.devtools.seaweed import SeaweedS3
from workers.providers.storage import image_store

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _picture_row(engine: Engine, store: object, user: uuid.UUID) -> uuid.UUID:
    with engine.begin() as conn:
        entry = insert_entry(conn, user)
        vid = uuid.uuid4()
        image = store.put(f"visualizations/{vid}.png", b"png", "image/png")  # type: ignore[attr-defined]
        thumb = store.put(f"visualizations/{vid}_thumb.webp", b"webp", "image/webp")  # type: ignore[attr-defined]
        conn.execute(
            text(
                "INSERT INTO visualizations (id, entry_id, user_id, status, image_url, "
                "thumbnail_url) VALUES (:v, :e, :u, 'completed', :i, :t)"
            ),
            {"v": vid, "e": entry, "u": user, "i": image, "t": thumb},
        )
    return vid


def test_erase_deletes_the_persons_pictures_from_the_bucket(
    s3_server: SeaweedS3,
    prefix: str,
    engine: Engine,
    db_url: str,
    redis_server_url: str,
    redis_namespace: str,
) -> None:
    store = image_store(s3_settings(s3_server, prefix))
    with engine.begin() as conn:
        gone, kept = insert_user(conn), insert_user(conn)
    gone_vids = [_picture_row(engine, store, gone) for _ in range(2)]
    kept_vid = _picture_row(engine, store, kept)

    def stored() -> str:
        return "\n".join(key for key, _ in store.stored("visualizations"))

    assert all(str(v) in stored() for v in [*gone_vids, kept_vid])
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.entrypoints.cli",
            "user",
            "erase",
            str(gone),
            "--yes",
            "--json",
        ],
        env={
            **os.environ,
            **s3_server.media_env(prefix),
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_server_url,
            "REDIS_NAMESPACE": redis_namespace,
            "PROVIDER": "local",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["media"]["files_deleted"] == 4 and "s3://" in report["media"]["store"]
    left = stored()
    assert not any(str(v) in left for v in gone_vids), left
    assert str(kept_vid) in left
