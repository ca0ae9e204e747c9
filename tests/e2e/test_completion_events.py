"""Completion events end to end: real worker processes, the emulator, real PostgreSQL
and Redis, a LISTENer as an API would hold, and a real local webhook receiver that
verifies every signature (workers/devtools/webhook_receiver.py)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from db.engine import connect
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness
from workers.devtools.webhook_receiver import WebhookReceiver, serve
from workers.messaging.redis_keys import queue_keys

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(uuid.uuid4().bytes + uuid.uuid4().bytes).decode()
EVENTS_QUEUE = "upstream-events"


@pytest.fixture(scope="module")
def hook() -> Iterator[tuple[WebhookReceiver, str]]:
    receiver = WebhookReceiver(SECRET)
    server = serve(receiver)
    yield receiver, f"http://127.0.0.1:{server.server_port}/hooks"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def harness(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    hook: tuple[WebhookReceiver, str],
) -> Iterator[Harness]:
    env = {
        "EVENTS_WEBHOOK_URL": hook[1],
        "EVENTS_WEBHOOK_SECRET": SECRET,
        "EVENTS_QUEUE": EVENTS_QUEUE,
        "EVENTS_MAX_ATTEMPTS": "3",
        "EVENTS_MIN_BACKOFF_MS": "100",
        "EVENTS_MAX_BACKOFF_MS": "300",
        "EVENTS_POLL_S": "0.5",
    }
    folder = tmp_path_factory.mktemp("events")
    with running_harness(database_factory, redis_server_url, folder, env=env) as h:
        yield h


class Listener:
    """LISTEN visualization_done on a connection of its own, as the API would."""

    def __init__(self, url: str) -> None:
        self.conn = connect(url, autocommit=True)
        self.conn.execute("LISTEN visualization_done")

    def collect(
        self, entries: set[str], quiet_s: float = 1.0, timeout: float = 60
    ) -> list[dict[str, Any]]:
        """Notifications about ``entries`` until each was heard and ``quiet_s`` passed
        without another (a second one would arrive then)."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            heard = {g["entry_id"] for g in got}
            if heard >= entries and time.monotonic() - last >= quiet_s:
                break
            for note in self.conn.notifies(timeout=0.2):
                payload = json.loads(note.payload)
                if payload["entry_id"] in entries:
                    got.append(payload)
                    last = time.monotonic()
        return got

    def everything(self, seconds: float) -> list[dict[str, Any]]:
        """Every notification within ``seconds``, about anyone."""
        return [json.loads(n.payload) for n in self.conn.notifies(timeout=seconds)]


@pytest.fixture
def listener(harness: Harness) -> Iterator[Listener]:
    li = Listener(harness.db_url)
    yield li
    li.conn.close()


def _for(hook: WebhookReceiver, entries: set[str]) -> list[dict[str, Any]]:
    return [r.body for r in hook.accepted() if r.body["data"]["entry_id"] in entries]


def _queued(harness: Harness, entries: set[str]) -> list[dict[str, Any]]:
    keys = queue_keys(harness.namespace, EVENTS_QUEUE)
    bodies = [json.loads(b) for b in harness.redis.hvals(keys.ready_bodies)]
    return [b for b in bodies if b["args"][0]["data"]["entry_id"] in entries]


def _cli(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env=harness.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_one_notification_and_one_delivery_per_finished_entry(
    harness: Harness, hook: tuple[WebhookReceiver, str], listener: Listener
) -> None:
    receiver, _ = hook
    expected: dict[str, str] = {}
    for i in range(8):
        marker = f"evt-{uuid.uuid4().hex[:8]}"
        entry_id, user_id = harness.make_entry(marker)
        if i % 4 == 0:  # a permanent error: the row fails at once
            harness.fault(kind="400", target="analysis", contains=marker, times=5)
            expected[str(entry_id)] = "failed"
        else:
            expected[str(entry_id)] = "completed"
        harness.publish(entry_id, user_id)
    for entry_id, status in expected.items():
        assert harness.wait_for(uuid.UUID(entry_id))["status"] == status
    got = listener.collect(set(expected))
    assert sorted((g["entry_id"], g["status"]) for g in got) == sorted(expected.items())
    assert all(set(g) == {"entry_id", "user_id", "status", "visualization_id"} for g in got)

    assert receiver.wait_until(lambda r: len(_for(r, set(expected))) >= len(expected), 30)
    time.sleep(1.0)  # a duplicate delivery would land now
    bodies = _for(receiver, set(expected))
    assert receiver.rejected == []  # every request was signed right
    assert sorted((b["data"]["entry_id"], b["data"]["status"]) for b in bodies) == sorted(
        expected.items()
    )
    assert len({b["id"] for b in bodies}) == len(expected)
    queued = _queued(harness, set(expected))
    assert len(queued) == len(expected)
    assert {q["message_id"] for q in queued} == {b["id"] for b in bodies}


def test_a_duplicate_message_sends_no_second_event(
    harness: Harness, hook: tuple[WebhookReceiver, str], listener: Listener
) -> None:
    receiver, _ = hook
    entry_id, user_id = harness.make_entry(f"dup-{uuid.uuid4().hex[:8]}")
    harness.publish(entry_id, user_id)
    harness.wait_for(entry_id)
    assert len(listener.collect({str(entry_id)})) == 1
    for _ in range(2):  # the same message again, as a redelivery would bring it
        harness.publish(entry_id, user_id)
    ready = queue_keys(harness.namespace, "visualizations").ready
    deadline = time.monotonic() + 10
    while harness.redis.llen(ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listener.everything(1.5) == []  # about nobody: this test runs alone
    assert receiver.wait_until(lambda r: len(_for(r, {str(entry_id)})) >= 1, 20)
    time.sleep(1.0)
    assert len(_for(receiver, {str(entry_id)})) == 1


def test_a_replay_that_ends_again_sends_again(
    harness: Harness, hook: tuple[WebhookReceiver, str], listener: Listener
) -> None:
    receiver, _ = hook
    marker = f"rpl-{uuid.uuid4().hex[:8]}"
    entry_id, user_id = harness.make_entry(marker)
    harness.fault(kind="400", target="analysis", contains=marker, times=1)
    harness.publish(entry_id, user_id)
    assert harness.wait_for(entry_id)["status"] == "failed"
    assert [g["status"] for g in listener.collect({str(entry_id)})] == ["failed"]

    done = _cli(harness, "replay", str(entry_id))
    assert done.returncode == 0, done.stderr
    harness.wait_for(entry_id, ("completed",))
    assert [g["status"] for g in listener.collect({str(entry_id)})] == ["completed"]
    assert receiver.wait_until(lambda r: len(_for(r, {str(entry_id)})) >= 2, 20)
    bodies = _for(receiver, {str(entry_id)})
    assert [b["type"] for b in bodies] == ["visualization.failed", "visualization.completed"]
    assert bodies[0]["id"] != bodies[1]["id"]


def test_a_receiver_failing_the_first_attempts_gets_each_event_on_retry(
    harness: Harness, hook: tuple[WebhookReceiver, str]
) -> None:
    receiver, _ = hook
    receiver.respond = lambda _id, attempt: 503 if attempt <= 2 else 204
    try:
        entries = set()
        for _ in range(3):
            entry_id, user_id = harness.make_entry(f"rty-{uuid.uuid4().hex[:8]}")
            harness.publish(entry_id, user_id)
            entries.add(str(entry_id))
        assert receiver.wait_until(lambda r: len(_for(r, entries)) >= 3, 30)
        time.sleep(1.0)
        with receiver.lock:
            mine = [r for r in receiver.received if r.body["data"]["entry_id"] in entries]
        assert sorted(r.status for r in mine) == [204] * 3 + [503] * 6
        assert len(_for(receiver, entries)) == 3 and receiver.rejected == []
    finally:
        receiver.respond = lambda _id, _attempt: 204
