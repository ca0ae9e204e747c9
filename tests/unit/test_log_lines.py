"""Log lines: bounded, valid JSON, written whole, messages summarised, secrets out."""

from __future__ import annotations

import io
import json
import logging
import threading

import dramatiq
import pytest

from domain.redaction import register_secret
from workers.log_lines import LineHandler, LineWriter, bounded_json
from workers.logging import MessageSummaries, _scrub_processor, summarise_message

pytestmark = pytest.mark.unit


def test_any_event_becomes_one_json_line_under_the_limit() -> None:
    event = {
        "event": "x" * 100_000,
        "exception": "Traceback (most recent call last):\n"
        + "frame\n" * 20_000
        + "KeyError: 'the end'",
        "nested": {"values": ["\x00\ud800\u202e" * 5_000] * 50},
        "level": "error",
        "message_id": "m-1",
    }
    for limit in (512, 4000):
        line = bounded_json(event, limit)
        assert len(line.encode()) <= limit and "\n" not in line
        parsed = json.loads(line)
        assert parsed["truncated"] is True and parsed["message_id"] == "m-1"
    assert json.loads(bounded_json(event, 4000))["exception"].endswith("KeyError: 'the end'")
    assert bounded_json({"event": "short"}, 512) == '{"event": "short"}'


class _CountingStream(io.StringIO):
    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_each_line_is_one_write_even_from_many_threads() -> None:
    stream = _CountingStream()
    writer = LineWriter(stream)
    lines = [json.dumps({"n": i, "pad": "p" * 3000}) for i in range(200)]
    threads = [threading.Thread(target=writer.write_line, args=(line,)) for line in lines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert stream.writes == 200
    assert sorted(json.loads(line)["n"] for line in stream.getvalue().splitlines()) == list(
        range(200)
    )


def test_dramatiq_lines_name_a_message_without_its_arguments() -> None:
    message = dramatiq.Message(
        queue_name="q", actor_name="entry.created", args=("A" * 1_000_000,), kwargs={}, options={}
    )
    record = logging.LogRecord(
        "dramatiq", logging.ERROR, __file__, 1, "Failed %s", (message,), None
    )
    assert MessageSummaries().filter(record)
    assert record.getMessage() == f"Failed entry.created[{message.message_id}]"
    assert summarise_message(message) == f"entry.created[{message.message_id}]"


def test_unformattable_records_become_a_short_line() -> None:
    stream = io.StringIO()
    handler = LineHandler(LineWriter(stream))
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "%d", ("not a number",), None))
    assert json.loads(stream.getvalue())["event"] == "log record could not be formatted"


def test_nested_values_are_scrubbed() -> None:
    register_secret("planted-secret-4567")
    event = {"payload": {"list": ["planted-secret-4567"]}, "error": RuntimeError("?key=abc123")}
    assert "planted-secret-4567" not in json.dumps(_scrub_processor(None, "info", event))
    assert event["error"] == "?key=***"
