"""Redraw and cancel (issue 23.4) with a real worker process, PostgreSQL, Redis and the
emulator over HTTP.

- A redraw (``ProducerAPI.redraw``, ``emotionviz enqueue entry ID --redraw``) makes one
  image call and no analysis call, puts the new style and picture on the row, removes
  the old files, and announces one new completion.
- A redraw of an entry that is not completed is refused (exit 2, one line; a raw
  message: no call, the row left alone).
- An entry deleted while its analysis runs gets no image call and leaves no file.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.errors import ConflictError, OwnershipError
from domain.messages import EntryCreated
from tests.e2e.conftest import Harness
from workers.logging import log_ref
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.producer_api import ProducerAPI
from workers.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def api(harness: Harness) -> Iterator[ProducerAPI]:
    """The producer API as an upstream service uses it, on the harness's broker."""
    settings = Settings(_env_file=None, redis_namespace=harness.namespace)  # type: ignore[call-arg]
    broker = build_broker(settings, harness.redis_url)
    factory = make_session_factory(harness.engine)
    yield ProducerAPI(lambda: UnitOfWork(factory, Producer(broker)))
    broker.close()


def _cli(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env=harness.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _path(harness: Harness, url: str) -> Path:
    return harness.media_dir / url.removeprefix("http://media.test/m/")


def _completions(harness: Harness, entry_id: uuid.UUID) -> int:
    with harness.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM completion_events "
                    "WHERE kind = 'visualization.completed' AND payload->>'entry_id' = :e"
                ),
                {"e": str(entry_id)},
            ).scalar_one()
        )


def _ledger(harness: Harness, entry_id: uuid.UUID) -> dict[str, int]:
    with harness.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT kind, count(*) FROM model_calls WHERE entry_id = :e GROUP BY kind"),
            {"e": entry_id},
        ).all()
    return {str(kind): int(n) for kind, n in rows}


def _redrawn(harness: Harness, entry_id: uuid.UUID, old_url: str) -> dict[str, Any]:
    """The row once its redraw completed (its picture changed)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = harness.visualization(entry_id)
        if row and row["status"] in ("completed", "failed") and row["image_url"] != old_url:
            return row
        time.sleep(0.1)
    raise AssertionError(f"not redrawn: {harness.visualization(entry_id)}")


def _outcomes(harness: Harness, entry_id: uuid.UUID, count: int) -> list[object]:
    """The outcomes the worker logged for the entry's messages, once ``count`` are."""
    deadline = time.monotonic() + 30
    while True:
        lines = [
            json.loads(line)
            for line in harness.log_path.read_text().splitlines()
            if log_ref(entry_id) in line and line.startswith("{")
        ]
        outcomes = [line["outcome"] for line in lines if "outcome" in line]
        if len(outcomes) >= count or time.monotonic() > deadline:
            return outcomes
        time.sleep(0.1)


def test_a_redraw_draws_once_from_the_stored_analysis_and_replaces_the_picture(
    harness: Harness, api: ProducerAPI
) -> None:
    marker = "redraw" + uuid.uuid4().hex[:8]
    entry_id, user_id = harness.make_entry(marker)
    harness.publish(entry_id, user_id, "abstract")
    first = harness.wait_for(entry_id)
    assert first["status"] == "completed", first["error_message"]
    assert harness.calls(marker) == {"analysis": 1, "image": 1}
    old_files = [_path(harness, first["image_url"]), _path(harness, first["thumbnail_url"])]
    assert all(path.is_file() for path in old_files)

    # Someone else's entry is refused before anything is published.
    with pytest.raises(OwnershipError):
        api.redraw(entry_id, uuid.uuid4(), "metaphor")
    api.redraw(entry_id, user_id, "metaphor")
    row = _redrawn(harness, entry_id, first["image_url"])

    assert row["status"] == "completed", row["error_message"]
    assert row["style"] == "metaphor"
    assert harness.calls(marker) == {"analysis": 1, "image": 2}  # the redraw: one image call
    assert row["gemini_analysis"] == first["gemini_analysis"]  # the stored analysis, reused
    assert row["image_url"].endswith("_v2.png") and row["thumbnail_url"].endswith("_v2_thumb.webp")
    assert _path(harness, row["image_url"]).is_file()
    assert _path(harness, row["thumbnail_url"]).is_file()
    assert not any(path.exists() for path in old_files)  # the old picture is gone
    assert _completions(harness, entry_id) == 2  # one new completion event
    assert _ledger(harness, entry_id) == {"analysis": 1, "image": 2}

    # Again, from the command line: back to the first slot's keys, the second removed.
    done = _cli(harness, "enqueue", "entry", str(entry_id), "--redraw", "--style", "diagram")
    assert done.returncode == 0, done.stderr
    again = _redrawn(harness, entry_id, row["image_url"])
    assert again["status"] == "completed" and again["style"] == "diagram"
    assert harness.calls(marker) == {"analysis": 1, "image": 3}
    assert _path(harness, again["image_url"]).is_file()
    assert "_v2" not in again["image_url"]
    assert not _path(harness, row["image_url"]).exists()
    assert not _path(harness, row["thumbnail_url"]).exists()
    assert _completions(harness, entry_id) == 3
    with harness.engine.connect() as conn:
        audit = conn.execute(
            text("SELECT detail FROM operator_actions WHERE target = :t"),
            {"t": f"entry:{entry_id}"},
        ).scalar_one()
    assert audit == {"redraw": True, "style": "diagram"}


def test_a_redraw_of_an_entry_not_completed_is_refused(harness: Harness, api: ProducerAPI) -> None:
    marker = "norow" + uuid.uuid4().hex[:8]
    entry_id, user_id = harness.make_entry(marker)  # no visualization yet

    done = _cli(harness, "enqueue", "entry", str(entry_id), "--redraw", "--style", "metaphor")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"emotionviz enqueue: entry {entry_id} cannot be redrawn: "
        "it has no visualization yet, not completed"
    ]
    with pytest.raises(ConflictError):
        api.redraw(entry_id, user_id, "metaphor")

    # A raw redraw message (another producer's) for it: refused by the worker, no call.
    harness.publish_message(
        EntryCreated(entry_id=entry_id, user_id=user_id, style="metaphor", redraw=True)
    )
    assert _outcomes(harness, entry_id, 1) == ["redraw_refused"]
    assert harness.calls(marker) == {}


def test_an_entry_deleted_while_its_analysis_runs_gets_no_image_call(harness: Harness) -> None:
    marker = "cancel" + uuid.uuid4().hex[:8]
    harness.fault(kind="slow", target="analysis", contains=marker, times=1, seconds=1.5)
    entry_id, user_id = harness.make_entry(marker)
    harness.publish(entry_id, user_id)
    deadline = time.monotonic() + 20
    while harness.calls(marker).get("analysis", 0) == 0:  # the analysis call is running
        assert time.monotonic() < deadline, "the analysis call never arrived"
        time.sleep(0.05)
    row = harness.visualization(entry_id)
    assert row is not None and row["status"] == "processing"
    with harness.engine.begin() as conn:
        conn.execute(text("DELETE FROM emotion_entries WHERE id = :e"), {"e": entry_id})

    assert _outcomes(harness, entry_id, 1) == ["lease_lost"]
    assert harness.calls(marker) == {"analysis": 1}  # no image call followed
    assert list(harness.media_dir.glob(f"**/{row['id']}*")) == []
