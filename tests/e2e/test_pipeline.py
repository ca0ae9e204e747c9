"""The entry.created pipeline end to end (real workers, broker, database, SDK, emulator)."""

from __future__ import annotations

import io
import json
import time
import uuid
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import text

from tests.e2e.conftest import API_KEY, Harness
from workers.logging import log_ref
from workers.messaging.redis_keys import queue_keys

pytestmark = [pytest.mark.e2e]


def _marker() -> str:
    return "m" + uuid.uuid4().hex[:10]


def _log_lines(harness: Harness, entry_id: uuid.UUID) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for line in harness.log_path.read_text().splitlines()
        if log_ref(entry_id) in line and line.startswith("{")
    ]


def _outcomes(harness: Harness, entry_id: uuid.UUID) -> list[object]:
    """One per message of the entry the worker finished (a deferred copy has none: the
    copy it publishes gets one)."""
    return [line["outcome"] for line in _log_lines(harness, entry_id) if "outcome" in line]


def _wait_for_outcomes(harness: Harness, entry_id: uuid.UUID, count: int, seconds: float) -> bool:
    """Until ``count`` messages of the entry are finished; False if they are not in time
    (the caller's assertions then say what happened instead)."""
    deadline = time.monotonic() + seconds
    while len(_outcomes(harness, entry_id)) < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def _deferred_due(harness: Harness, entry_id: uuid.UUID) -> list[float]:
    """When the entry's deferred copies waiting in the delay queue are due (epoch s,
    the messages' own ``eta``)."""
    keys = queue_keys(harness.namespace, "visualizations")
    envelopes = [json.loads(body) for body in harness.redis.hvals(keys.delayed_bodies)]
    return [
        e["options"]["eta"] / 1000
        for e in envelopes
        if e["args"] and e["args"][0].get("entry_id") == str(entry_id)
    ]


@pytest.mark.parametrize("style", ["abstract", "diagram", "metaphor"])
def test_happy_path_writes_rows_files_and_analytics(harness: Harness, style: str) -> None:
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.publish(entry_id, user_id, style)
    row = harness.wait_for(entry_id)
    assert row["status"] == "completed", row["error_message"]
    assert row["style"] == style and row["user_id"] == user_id
    assert row["summary"] and row["insights"] and row["error_message"] is None
    assert set(row["visual_elements"]) == {"palette", "motifs", "composition", "metaphor"}
    assert row["gemini_analysis"]["model"] == "gemini-3.5-flash"
    assert row["gemini_analysis"]["response"]["candidates"][0]["finish_reason"] == "STOP"
    raw_image = json.dumps(row["nanobanana_response"])
    assert "omitted" in raw_image and len(raw_image) < 5000  # no image bytes stored
    assert row["processing_started_at"] <= row["processing_completed_at"]
    for url, limit in ((row["image_url"], None), (row["thumbnail_url"], 256)):
        assert url.startswith("http://media.test/m/visualizations/")
        path = harness.media_dir / url.removeprefix("http://media.test/m/")
        with Image.open(io.BytesIO(path.read_bytes())) as image:
            image.load()
            if limit:
                assert max(image.size) <= limit and image.format == "WEBP"
            else:
                assert image.format == "PNG"
    # The worker's refresher drains the completion's queued refresh about a second later.
    periods = _analytics_within(harness, user_id, seconds=10)
    assert [p[0] for p in periods] == [0, 6, periods[2][0]] and periods[2][0] >= 27
    assert all(p[1] == 1 and p[2] == {"anxiety": 1, "joy": 1} for p in periods)
    assert harness.calls(marker) == {"analysis": 1, "image": 1}


def _analytics_within(harness: Harness, user_id: uuid.UUID, seconds: float) -> list[Any]:
    """The person's analytics rows once the three periods are there and nothing of theirs
    is queued; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        with harness.engine.connect() as conn:
            periods = conn.execute(
                text(
                    "SELECT period_end - period_start, total_entries, emotion_counts "
                    "FROM emotion_analytics WHERE user_id = :u ORDER BY 1"
                ),
                {"u": user_id},
            ).all()
            queued = conn.execute(
                text("SELECT count(*) FROM analytics_refresh_queue WHERE user_id = :u"),
                {"u": user_id},
            ).scalar_one()
        if len(periods) == 3 and queued == 0:
            return list(periods)
        assert time.monotonic() < deadline, f"analytics not refreshed: {periods}, {queued} queued"
        time.sleep(0.1)


def test_duplicate_message_calls_each_api_once(harness: Harness) -> None:
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.publish(entry_id, user_id)
    first = harness.wait_for(entry_id)
    harness.publish(entry_id, user_id)
    ran = _wait_for_outcomes(harness, entry_id, 2, seconds=15)  # the duplicate has run
    assert harness.calls(marker) == {"analysis": 1, "image": 1}
    assert ran, harness.log_path.read_text(errors="replace")[-3000:]
    assert harness.visualization(entry_id)["updated_at"] == first["updated_at"]
    assert _outcomes(harness, entry_id) == ["completed", "already_completed"]


def test_two_workers_racing_make_one_call_each(harness: Harness) -> None:
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    copies = 4
    second = harness.start_worker()
    try:
        # A slow image keeps the first worker's lease held while the copies arrive; the
        # copies that find it held are deferred until it could have run out.
        harness.fault(kind="slow", target="image", contains=marker, seconds=1.5)
        for _ in range(copies):
            harness.publish(entry_id, user_id)
        row = harness.wait_for(entry_id)
        # A copy deferred now is due at most LEASE_S + 1 s (the jitter) from now; those
        # already waiting say when they are due. Wait until every copy has come back
        # and run: a copy that called the model again would show up only then.
        lease_s = float(harness.env["LEASE_S"])
        due = max([time.time() + lease_s + 1, *_deferred_due(harness, entry_id)])
        ran = _wait_for_outcomes(harness, entry_id, copies, seconds=due - time.time() + 15)
    finally:
        harness.stop_worker(second)
    assert row["status"] == "completed"
    assert harness.calls(marker) == {"analysis": 1, "image": 1}
    assert ran, f"not every copy ran: {_outcomes(harness, entry_id)}"
    deferred = [line for line in _log_lines(harness, entry_id) if "deferred" in str(line["event"])]
    assert deferred, "no copy was deferred: the test did not exercise the lease"
    assert _deferred_due(harness, entry_id) == []
    assert sorted(map(str, _outcomes(harness, entry_id))) == ["already_completed"] * (
        copies - 1
    ) + ["completed"]


def test_image_failure_retry_does_not_repeat_analysis(harness: Harness) -> None:
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.fault(kind="503", target="image", contains=marker, times=1)
    harness.publish(entry_id, user_id)
    row = harness.wait_for(entry_id)
    assert row["status"] == "completed"
    assert harness.calls(marker) == {"analysis": 1, "image": 2}


def test_429_waits_the_retry_delay_then_succeeds(harness: Harness) -> None:
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.fault(kind="429", target="analysis", contains=marker, seconds=1.5)
    harness.publish(entry_id, user_id)
    assert harness.wait_for(entry_id)["status"] == "completed"
    first, second = harness.call_times(marker, "analysis")
    assert second - first >= 1.5  # RetryInfo honoured, not the 100 ms backoff


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "500", "target": "analysis"},
        {"kind": "503", "target": "image"},
        {"kind": "502html", "target": "analysis"},
        {"kind": "timeout", "target": "analysis", "seconds": 3},
    ],
)
def test_transient_errors_are_retried_then_succeed(
    harness: Harness, fault: dict[str, object]
) -> None:
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.fault(**fault, contains=marker, times=1)
    harness.publish(entry_id, user_id)
    assert harness.wait_for(entry_id)["status"] == "completed"
    assert harness.calls(marker)[str(fault["target"])] == 2


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"kind": "400", "target": "analysis"}, "request rejected (400 INVALID_ARGUMENT)"),
        (
            {"kind": "block_prompt", "target": "analysis"},
            "prompt was blocked by the safety filter (SAFETY)",
        ),
        ({"kind": "image_safety", "target": "image"}, "finish reason IMAGE_SAFETY"),
        ({"kind": "bad_image", "target": "image"}, "not a decodable image"),
    ],
)
def test_permanent_errors_fail_fast_with_reason(
    harness: Harness, fault: dict[str, object], reason: str
) -> None:
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.fault(**fault, contains=marker, times=5)
    message_id = harness.publish(entry_id, user_id)
    row = harness.wait_for(entry_id)
    assert row["status"] == "failed" and reason in row["error_message"]
    # Dead-lettered at once; a retried message would reach the dead letters only after
    # its retries, each calling the model again.
    deadline = time.monotonic() + 10
    while not any(m["message_id"] == message_id for m in harness.dead_letters()):
        assert time.monotonic() < deadline, "not dead-lettered"
        time.sleep(0.1)
    assert harness.calls(marker)[str(fault["target"])] == 1  # no retry


def test_exhausted_retries_fail_with_the_last_error(harness: Harness) -> None:
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.fault(kind="503", target="analysis", contains=marker, times=10)
    harness.publish(entry_id, user_id)
    row = harness.wait_for(entry_id, ("failed",), timeout=30)
    assert row["error_message"].startswith("gave up after 4 attempts; last error:")
    assert "503 UNAVAILABLE" in row["error_message"]
    assert harness.calls(marker) == {"analysis": 4}


def test_entry_of_another_user_is_dead_lettered_and_nothing_changes(harness: Harness) -> None:
    marker = _marker()
    entry_id, _owner = harness.make_entry(marker)
    _, stranger = harness.make_entry(_marker())
    with harness.engine.connect() as conn:
        before = conn.execute(
            text("SELECT * FROM emotion_entries WHERE id = :e"), {"e": entry_id}
        ).one()
    message_id = harness.publish(entry_id, stranger)
    deadline = time.monotonic() + 15
    while not any(m["message_id"] == message_id for m in harness.dead_letters()):
        assert time.monotonic() < deadline, "not dead-lettered"
        time.sleep(0.1)
    assert harness.visualization(entry_id) is None
    with harness.engine.connect() as conn:
        after = conn.execute(
            text("SELECT * FROM emotion_entries WHERE id = :e"), {"e": entry_id}
        ).one()
    assert after == before
    assert harness.calls(marker) == {}
    assert "does not belong to user" in harness.log_path.read_text()


def test_malformed_messages_are_rejected_and_the_worker_keeps_going(harness: Harness) -> None:
    keys = queue_keys(harness.namespace, "visualizations")
    good = str(uuid.uuid4())
    bodies = {
        "not json": b"\x00this is not json",
        "missing field": {"args": [{"version": 1, "user_id": good}]},
        "wrong types": {"args": [{"version": 1, "entry_id": 12, "user_id": True}]},
        "unknown style": {
            "args": [{"version": 1, "entry_id": good, "user_id": good, "style": "cubist"}]
        },
        "two args": {"args": [{"version": 1}, {"x": 1}]},
    }
    for body in bodies.values():
        if isinstance(body, dict):
            redis_id = str(uuid.uuid4())
            envelope = {
                "queue_name": "visualizations",
                "actor_name": "entry.created",
                "kwargs": {},
                "options": {"redis_message_id": redis_id},
                "message_id": str(uuid.uuid4()),
                "message_timestamp": int(time.time() * 1000),
                **body,
            }
            client = harness.redis
            client.hset(keys.ready_bodies, redis_id, json.dumps(envelope))
            client.rpush(keys.ready, redis_id)
        else:
            harness.publish_raw(body)
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.publish(entry_id, user_id)
    assert harness.wait_for(entry_id)["status"] == "completed"
    assert all(proc.poll() is None for proc in harness.workers)
    log = harness.log_path.read_text()
    assert "message rejected before routing" in log and "body is not valid JSON" in log
    assert "Consumer encountered an unexpected error" not in log
    dead = [json.loads(b) for b in harness.redis.hvals(keys.dead_bodies)]
    assert {
        "rejected": {"reason": "body is not valid JSON: Expecting value at char 0", "bytes": 17},
        "body": "\x00this is not json",
    } in dead
    assert harness.redis.hlen(keys.ready_bodies) == 0
    for reason in (
        "entry_id: Field required",
        "entry_id: UUID input should be",
        "style: Input should be",
        "expects one JSON object argument",
    ):
        assert reason in log, reason


def test_api_key_never_appears_in_logs_or_rows(harness: Harness) -> None:
    marker = _marker()
    entry_id, user_id = harness.make_entry(marker)
    harness.fault(kind="400", target="analysis", contains=marker)
    harness.publish(entry_id, user_id)
    harness.wait_for(entry_id)
    assert API_KEY not in harness.log_path.read_text()
    with harness.engine.connect() as conn:
        leaked = conn.execute(
            text(
                "SELECT count(*) FROM visualizations WHERE concat_ws(' ', gemini_analysis::text, "
                "nanobanana_response::text, error_message, summary) LIKE :k"
            ),
            {"k": f"%{API_KEY}%"},
        ).scalar_one()
        rows = conn.execute(text("SELECT count(*) FROM visualizations")).scalar_one()
    assert rows > 5 and leaked == 0
