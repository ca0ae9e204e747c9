"""Pictures across machines, through a real S3 server: a worker process ("machine A")
writes an entry's pictures to the bucket and nothing to its own disk; the console of
"machine B" (its own process and media folder, the same MEDIA_URL) serves them; deleting
the entry's person and running media GC on "machine C" deletes the objects."""

from __future__ import annotations

import http.client
import io
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import text

from tests.conftest import DatabaseFactory
from tests.e2e.conftest import running_harness
from tests.s3.conftest import s3_settings
from workers.devtools.seaweed import SeaweedS3
from workers.providers.storage import image_store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TOKEN = "s3-console-" + uuid.uuid4().hex


@contextmanager
def _console(env: dict[str, str], log_path: Path) -> Iterator[tuple[str, int]]:
    """`emotionviz console` on a free port: (host, port) once it answers."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.entrypoints.cli", "console", "--port", "0"],
            env={**env, "CONSOLE_TOKEN": TOKEN},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        url = None
        while url is None:
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            url = next((line.split()[-1] for line in lines if "listening on" in line), None)
            time.sleep(0.05)
        host, port = url.rstrip("/").split("//")[1].split(":")
        yield host, int(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        proc.stdout.close()


def _get(where: tuple[str, int], path: str) -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(*where, timeout=15)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def test_pictures_written_on_one_machine_are_served_on_another_and_deleted_from_a_third(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    s3_server: SeaweedS3,
    prefix: str,
    tmp_path: Path,
) -> None:
    media_env = s3_server.media_env(prefix)
    (tmp_path / "a").mkdir()
    with running_harness(
        database_factory,
        redis_server_url,
        tmp_path / "a",
        env={**media_env, "MEDIA_DIR": str(tmp_path / "a" / "media")},
    ) as machine_a:
        entry_id, user_id = machine_a.make_entry("s3fleet")
        machine_a.publish(entry_id, user_id)
        row = machine_a.wait_for(entry_id, timeout=60)
        assert row["status"] == "completed", row
        address = f"s3://{s3_server.bucket}/{prefix}/visualizations/"
        assert row["image_url"].startswith(address) and row["thumbnail_url"].startswith(address)
        assert not (tmp_path / "a" / "media").exists()  # nothing on machine A's own disk

        store = image_store(s3_settings(s3_server, prefix))  # any machine's view
        image_key = store.key_for_url(row["image_url"])
        thumb_key = store.key_for_url(row["thumbnail_url"])
        assert image_key and thumb_key
        stored = store.get(image_key)

        machine_b = {**machine_a.env, "MEDIA_DIR": str(tmp_path / "b" / "media")}
        (tmp_path / "b").mkdir()
        with _console(machine_b, tmp_path / "b" / "console.log") as console:
            status, content_type, body = _get(console, f"/jobs/entry/{entry_id}/image/full")
            assert status == 200 and body == stored
            assert content_type.startswith("image/")
            Image.open(io.BytesIO(body)).verify()
            status, content_type, thumb = _get(console, f"/jobs/entry/{entry_id}/image/thumbnail")
            assert (status, content_type) == (200, "image/webp")
            assert Image.open(io.BytesIO(thumb)).format == "WEBP"

            with machine_a.engine.begin() as conn:  # the person leaves; FKs cascade
                conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": user_id})
            machine_c = {**machine_a.env, "MEDIA_DIR": str(tmp_path / "c" / "media")}
            gc = subprocess.run(
                [sys.executable, "-m", "workers.entrypoints.cli", "media", "gc", "--apply"],
                env=machine_c,
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert gc.returncode == 0, gc.stderr
            assert store.keys("visualizations") == []  # both objects gone from the bucket
            with pytest.raises(FileNotFoundError):
                store.get(image_key)
            assert _get(console, f"/jobs/entry/{entry_id}/image/full")[0] == 404


def test_a_bad_media_url_is_a_settings_error_of_one_line(tmp_path: Path) -> None:
    for media_url, says in (
        ("gs://bucket/pictures", "the scheme must be s3"),
        ("s3:///pictures", "names its bucket"),
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "workers.entrypoints.cli", "health"],
            env={**os.environ, "MEDIA_URL": media_url, "AWS_SECRET_ACCESS_KEY": "hunter2-aws"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "MEDIA_URL" in lines[0] and says in lines[0], proc.stderr
        assert "hunter2-aws" not in proc.stderr + proc.stdout
