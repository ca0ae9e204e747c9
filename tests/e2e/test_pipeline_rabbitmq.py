"""The entry.created pipeline on RabbitMQ: our producer publishes on a RabbitmqBroker,
a real worker process consumes with BROKER_URL=amqp://... (PostgreSQL, the emulator
and REDIS_URL for rate limits and counters as on Redis). Run twice: on classic queues
(the default) and on quorum queues (RABBITMQ_QUEUE_TYPE=quorum, their delay and dead-
letter queues too), publisher confirms on. One vhost for each, so parallel runs never
share a queue (tests/rabbitmq_support.py)."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from domain.messages import EntryCreated
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness
from tests.rabbitmq_support import peek, publish_raw, queue_types, rabbitmq_vhost, ready_count
from workers.logging import log_ref
from workers.messaging.producer import Producer
from workers.messaging.rabbitmq import SafeRabbitmqBroker
from workers.messaging.rabbitmq_queues import QueueType

pytestmark = [pytest.mark.e2e]
QUEUE = "visualizations"


class Rabbit:
    def __init__(self, harness: Harness, url: str, queue_type: QueueType) -> None:
        self.h, self.url = harness, url
        self.broker = SafeRabbitmqBroker(url=url, queue_type=queue_type)
        self.producer = Producer(self.broker)

    def publish(self, entry_id: uuid.UUID, user_id: uuid.UUID) -> str:
        return self.producer.publish(EntryCreated(entry_id=entry_id, user_id=user_id))

    def dead_letters(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in peek(self.url, f"{QUEUE}.XQ")]

    def wait_dead_letter(self, match: Any, timeout: float = 15) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for letter in self.dead_letters():
                if match(letter):
                    return letter
            time.sleep(0.2)
        raise AssertionError(f"no such dead letter in {self.dead_letters()}")


@pytest.fixture(scope="module", params=["classic", "quorum"])
def rabbit(
    request: pytest.FixtureRequest,
    database_factory: DatabaseFactory,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Rabbit]:
    queue_type: QueueType = request.param
    with rabbitmq_vhost(f"e2e-{queue_type}") as url:
        folder: Path = tmp_path_factory.mktemp("e2e-rabbitmq")
        env = {"BROKER_URL": url, "RABBITMQ_QUEUE_TYPE": queue_type}
        with running_harness(database_factory, redis_server_url, folder, env=env) as harness:
            r = Rabbit(harness, url, queue_type)
            try:
                yield r
            finally:
                r.broker.close()


def _marker() -> str:
    return "r" + uuid.uuid4().hex[:10]


def test_entries_complete_on_rabbitmq(rabbit: Rabbit) -> None:
    entries = [rabbit.h.make_entry(_marker()) for _ in range(3)]
    for entry_id, user_id in entries:
        rabbit.publish(entry_id, user_id)
    for entry_id, _ in entries:
        row = rabbit.h.wait_for(entry_id)
        assert row["status"] == "completed", row["error_message"]
        assert row["image_url"] and row["thumbnail_url"]
    if shutil.which("rabbitmqctl"):  # the queues are of the type asked for
        types = queue_types(rabbit.url)
        wanted = rabbit.broker.queue_type
        assert [types[f"{QUEUE}{suffix}"] for suffix in ("", ".DQ", ".XQ")] == [wanted] * 3


def test_transient_fault_is_retried_through_the_delay_queue(rabbit: Rabbit) -> None:
    marker = _marker()
    entry_id, user_id = rabbit.h.make_entry(marker)
    rabbit.h.fault(kind="503", target="image", contains=marker, times=1)
    rabbit.publish(entry_id, user_id)
    assert rabbit.h.wait_for(entry_id)["status"] == "completed"
    assert rabbit.h.calls(marker) == {"analysis": 1, "image": 2}


def test_permanent_fault_fails_with_reason_and_dead_letters_it(rabbit: Rabbit) -> None:
    marker = _marker()
    entry_id, user_id = rabbit.h.make_entry(marker)
    rabbit.h.fault(kind="400", target="analysis", contains=marker, times=5)
    message_id = rabbit.publish(entry_id, user_id)
    row = rabbit.h.wait_for(entry_id)
    assert row["status"] == "failed"
    assert "request rejected (400 INVALID_ARGUMENT)" in row["error_message"]
    letter = rabbit.wait_dead_letter(lambda m: m.get("message_id") == message_id)
    assert "400 INVALID_ARGUMENT" in letter["options"]["traceback"]  # the reason travels
    assert rabbit.h.calls(marker) == {"analysis": 1}  # no retry


def test_duplicate_message_does_nothing(rabbit: Rabbit) -> None:
    marker = _marker()
    entry_id, user_id = rabbit.h.make_entry(marker)
    rabbit.publish(entry_id, user_id)
    first = rabbit.h.wait_for(entry_id)
    rabbit.publish(entry_id, user_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and ready_count(rabbit.url, QUEUE):
        time.sleep(0.1)
    time.sleep(1.0)  # let the duplicate run
    assert rabbit.h.calls(marker) == {"analysis": 1, "image": 1}
    assert rabbit.h.visualization(entry_id)["updated_at"] == first["updated_at"]
    outcomes = [
        json.loads(line).get("outcome")
        for line in rabbit.h.log_path.read_text().splitlines()
        if log_ref(entry_id) in line and '"outcome"' in line
    ]
    assert outcomes == ["completed", "already_completed"]


def test_malformed_envelopes_are_dead_lettered_with_reasons(rabbit: Rabbit) -> None:
    def envelope(**fields: Any) -> bytes:
        body = {
            "queue_name": QUEUE,
            "actor_name": "entry.created",
            "args": [],
            "kwargs": {},
            "options": {},
            "message_id": str(uuid.uuid4()),
            "message_timestamp": int(time.time() * 1000),
            **fields,
        }
        return json.dumps(body).encode()

    bad = {
        b"\x00this is not json": "body is not valid JSON",
        envelope(actor_name="no.such.actor"): "is not a declared actor",
        envelope(queue_name="intake"): "is not the queue it was taken from",
        envelope(options=[1]): "options is an array, not an object",
        envelope(options={"retries": "x"}): "options.retries is a string",
    }
    for body in bad:
        publish_raw(rabbit.url, QUEUE, body)
    entry_id, user_id = rabbit.h.make_entry(_marker())
    rabbit.publish(entry_id, user_id)
    assert rabbit.h.wait_for(entry_id)["status"] == "completed"
    assert all(proc.poll() is None for proc in rabbit.h.workers)
    for reason in bad.values():
        letter = rabbit.wait_dead_letter(
            lambda m, r=reason: r in m.get("rejected", {}).get("reason", "")
        )
        assert letter["rejected"]["bytes"] > 0
    log = rabbit.h.log_path.read_text()
    assert "Consumer encountered an unexpected error" not in log
    assert "Traceback" not in log
