"""Which bodies the consumer admits, and the reason it gives for the others."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workers.messaging.envelope import MAX_DEPTH, inspect, summary

pytestmark = pytest.mark.unit

ACTORS = {"entry.created": "visualizations", "intake.step": "intake"}


def _body(**changes: Any) -> bytes:
    envelope: dict[str, Any] = {
        "queue_name": "visualizations",
        "actor_name": "entry.created",
        "args": [{"version": 1}],
        "kwargs": {},
        "options": {"redis_message_id": "r-1"},
        "message_id": "m-1",
        "message_timestamp": 1764000000000,
    }
    for key, value in changes.items():
        if value is None:
            envelope.pop(key)
        else:
            envelope[key] = value
    return json.dumps(envelope).encode()


def _problem(data: bytes | None, queue: str = "visualizations") -> str | None:
    return inspect(data, queue=queue, actor_queues=ACTORS, max_bytes=4096).problem


def test_a_good_envelope_is_admitted_with_its_fields() -> None:
    verdict = inspect(_body(), queue="visualizations", actor_queues=ACTORS, max_bytes=4096)
    assert verdict.admitted and verdict.fields is not None
    assert verdict.fields["options"] == {"redis_message_id": "r-1"}
    delayed = _body(queue_name="visualizations.DQ", options={"redis_message_id": "r", "eta": 5})
    assert _problem(delayed, "visualizations.DQ") is None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00not json", "body is not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b"[1, 2]", "body is an array, not a message object"),
        (b"x" * 5000, "over MAX_MESSAGE_BYTES (4096)"),
        (None, "has no body"),
        (_body(options=[]), "options is an array, not an object"),
        (_body(kwargs=["a"]), "kwargs is an array, not an object"),
        (_body(args={"a": 1}), "args is an object, not an array"),
        (_body(queue_name="elsewhere"), 'queue_name "elsewhere" is not the queue'),
        (_body(actor_name="nope"), 'actor_name "nope" is not a declared actor'),
        (_body(actor_name="intake.step"), "consumes queue intake"),
        (_body(options={}), "options.redis_message_id is missing"),
        (_body(options={"redis_message_id": 7}), "options.redis_message_id is missing"),
        (_body(message_id=None), "message_id is missing"),
        (_body(message_id=""), "message_id must be"),
        (_body(message_timestamp="now"), "message_timestamp"),
        (_body(extra=1), 'unknown field "extra"'),
        (_body(options={"redis_message_id": "r", "retries": "5"}), "options.retries is a string"),
        (_body(options={"redis_message_id": "r", "retries": True}), "options.retries is a boolean"),
        (_body(options={"redis_message_id": "r", "eta": -1}), "options.eta is negative"),
        (_body(options={"redis_message_id": "r", "throws": "X"}), "options.throws"),
        (_body(options={"redis_message_id": "r", "on_failure": "x"}), "options.on_failure"),
        (
            _body(args=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
            f"deeper than {MAX_DEPTH}",
        ),
    ],
)
def test_bodies_dramatiq_cannot_route_are_refused_with_a_reason(
    data: bytes | None, reason: str
) -> None:
    problem = _problem(data)
    assert problem is not None and reason in problem, problem


def test_reasons_and_summaries_are_short_and_quote_no_secret() -> None:
    problem = _problem(_body(actor_name="x" * 10_000 + "?key=AIzaSecret"))
    assert problem is not None and len(problem) < 200 and "AIzaSecret" not in problem
    described = summary(b"\x00" + b"y" * 1_000_000)
    assert described["bytes"] == 1_000_001 and len(described["body_start"]) <= 80
