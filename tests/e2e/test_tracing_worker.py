"""Tracing turned on by the standard variables alone, in a real worker process
(Dramatiq's CLI): the trace the producer API starts in this process continues in the
worker, through the message only, down to the model calls and the completion's
transaction. The worker exports with the console exporter (spans as JSON on its
output), so what crossed the process boundary is read back from there."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from db.engine import make_session_factory
from db.uow import UnitOfWork
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.observability import tracing
from workers.producer_api import ProducerAPI
from workers.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def harness(
    database_factory: DatabaseFactory, redis_server_url: str, tmp_path: Path
) -> Iterator[Harness]:
    with running_harness(database_factory, redis_server_url, tmp_path, start=False) as h:
        yield h


def _spans(log: str) -> list[dict[str, Any]]:
    """The console exporter's span objects among the worker's log lines."""
    decoder, found, at = json.JSONDecoder(), [], log.find("{\n")
    while at != -1:
        try:
            value, end = decoder.raw_decode(log, at)
        except ValueError:
            end = at + 1
        else:
            if isinstance(value, dict) and "context" in value and "name" in value:
                found.append(value)
        at = log.find("{\n", end)
    return found


def test_a_worker_traced_by_the_variables_continues_the_producers_trace(
    harness: Harness,
) -> None:
    harness.start_worker(
        threads=2,
        extra_env={
            "OTEL_TRACES_EXPORTER": "console",
            "OTEL_SERVICE_NAME": "worker-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # export within 50 ms, not 5 s
        },
    )
    provider = TracerProvider()
    ours = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(ours))
    broker = build_broker(
        Settings(_env_file=None, redis_namespace=harness.namespace),  # type: ignore[call-arg]
        harness.redis_url,
    )
    tracing.use(provider)
    try:
        producer = Producer(broker)
        api = ProducerAPI(lambda: UnitOfWork(make_session_factory(harness.engine), producer))
        entry_id, user_id = harness.make_entry(f"trace-{uuid.uuid4().hex[:8]}")
        with provider.get_tracer("test").start_as_current_span("upstream request") as request:
            api.entry_created(entry_id, user_id)
    finally:
        tracing.use(None)
        broker.close()
        provider.shutdown()
    assert harness.wait_for(entry_id)["status"] == "completed"
    (publish,) = [s for s in ours.get_finished_spans() if s.name == "publish entry.created"]
    assert publish.context is not None
    trace_id = f"0x{request.get_span_context().trace_id:032x}"

    wanted = {"process entry.created", "uow VisualizationService._steps"}
    deadline, theirs = time.monotonic() + 20, []
    while time.monotonic() < deadline:
        theirs = [
            s
            for s in _spans(harness.log_path.read_text(errors="replace"))
            if s["context"]["trace_id"] == trace_id
        ]
        if wanted <= {s["name"] for s in theirs}:
            break
        time.sleep(0.1)
    names = {s["name"] for s in theirs}
    assert wanted <= names, names
    consume = next(s for s in theirs if s["name"] == "process entry.created")
    assert consume["parent_id"] == f"0x{publish.context.span_id:016x}"
    assert consume["kind"] == "SpanKind.CONSUMER"
    assert consume["resource"]["attributes"]["service.name"] == "worker-under-test"
    children = [s for s in theirs if s["parent_id"] == consume["context"]["span_id"]]
    assert {s["name"].split(" ")[0] for s in children} >= {"analysis", "image", "uow"}
