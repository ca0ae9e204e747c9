"""One entry, one trace: from the producer API's call, inside the caller's span, through
the message to a real Dramatiq worker (in this process, so the SDK's in-memory exporter
sees its spans; the context crosses only in the message, since the worker's threads
do not inherit the caller's), its two model calls over real HTTP to the emulator and
its units of work on real PostgreSQL, to the completion's transaction. A real Redis
broker. Also: a retry stays in the trace; a hostile trace context is ignored and the
entry completes; tracing off writes no context and makes no span."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dramatiq
import jsonschema
import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine, text
from structlog.testing import capture_logs

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.messages import EntryCreated
from tests.integration.helpers import insert_entry, insert_user
from workers.devtools.emulator import EmulatorState, start_in_thread
from workers.devtools.emulator.state import Fault
from workers.devtools.schemas_export import ENVELOPE_OPTIONS
from workers.entrypoints.actors import ActorDependencies, declare_actors
from workers.logging import log_ref
from workers.messaging.producer import Producer, envelope
from workers.messaging.redis_keys import queue_keys
from workers.observability import tracing
from workers.producer_api import ProducerAPI
from workers.providers.factory import build_providers
from workers.services.visualize import VisualizationService, VisualizeLimits
from workers.settings import Settings

pytestmark = pytest.mark.integration

KEY = "tracing-test-key"
# Unlikely words: no span attribute may carry the entry's text.
SITUATION = "a heron stood in the reeds of Quillbrook"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for this test only (the process is left off)."""
    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.use(provider)
    yield spans
    tracing.use(None)
    provider.shutdown()


@dataclass
class World:
    engine: Engine
    broker: dramatiq.Broker
    settings: Settings
    api: ProducerAPI
    producer: Producer
    emulator: EmulatorState
    user_id: uuid.UUID
    redis_url: str

    def entry(self) -> uuid.UUID:
        with self.engine.begin() as conn:
            return insert_entry(conn, self.user_id, situation=SITUATION)

    def status(self, entry_id: uuid.UUID) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT status FROM visualizations WHERE entry_id = :e"), {"e": entry_id}
            ).scalar_one_or_none()

    def run_until(self, done: Callable[[], bool], timeout_s: float = 30) -> None:
        """A real worker (one thread) until ``done``."""
        worker = dramatiq.Worker(self.broker, worker_timeout=50, worker_threads=1)
        worker.start()
        try:
            deadline = time.monotonic() + timeout_s
            while not done():
                assert time.monotonic() < deadline, "the worker did not finish in time"
                time.sleep(0.02)
        finally:
            worker.stop()


@pytest.fixture
def world(
    engine: Engine,
    broker: dramatiq.Broker,
    redis_server_url: str,
    redis_namespace: str,
    tmp_path: Path,
) -> Iterator[World]:
    emulator = start_in_thread(EmulatorState(api_key=KEY))
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        provider="gemini",
        gemini_api_key=KEY,
        gemini_base_url=emulator.url,
        media_dir=tmp_path,
        redis_namespace=redis_namespace,
    )
    client = redis.Redis.from_url(redis_server_url)
    factory = make_session_factory(engine)
    producer = Producer(broker)
    providers = build_providers(settings, client)
    service = VisualizationService(
        lambda: UnitOfWork(factory, producer),
        providers,
        VisualizeLimits(lease_s=60, thumbnail_px=64, max_image_bytes=10**7, max_image_pixels=10**7),
    )
    deps = ActorDependencies(
        visualization=lambda: service,
        intake=lambda: None,  # type: ignore[arg-type, return-value]
        recompute=lambda message: None,  # type: ignore[arg-type, return-value]
        reconcile=lambda: None,  # type: ignore[arg-type, return-value]
        collect_media_garbage=lambda: (0, 0),
        publisher=lambda: producer,
        count=lambda name: None,
    )
    declare_actors(broker, settings, deps)
    with engine.begin() as conn:
        user_id = insert_user(conn)
    api = ProducerAPI(lambda: UnitOfWork(factory, producer))
    yield World(engine, broker, settings, api, producer, emulator.state, user_id, redis_server_url)
    emulator.shutdown()
    emulator.server_close()
    client.close()


def _queued_bodies(world: World) -> list[bytes]:
    client = redis.Redis.from_url(world.redis_url)
    keys = queue_keys(world.settings.redis_namespace, EntryCreated.queue_name)
    try:
        return list(client.hvals(keys.ready_bodies))
    finally:
        client.close()


def _finished(exporter: InMemorySpanExporter, name: str, count: int = 1) -> Callable[[], bool]:
    return lambda: sum(s.name == name for s in exporter.get_finished_spans()) >= count


def _one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def _id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_one_entry_is_one_trace_from_the_api_call_to_the_completion(
    world: World, exporter: InMemorySpanExporter
) -> None:
    entry_id = world.entry()
    caller = tracing.tracer()
    with caller.start_as_current_span("upstream POST /entries") as request:
        world.api.entry_created(entry_id, world.user_id)
    # What the message carries is what docs/messages/ documents.
    (body,) = _queued_bodies(world)
    jsonschema.validate(
        json.loads(body)["options"][tracing.OPTION], ENVELOPE_OPTIONS["trace_context"]
    )
    world.run_until(_finished(exporter, "process entry.created"))
    assert world.status(entry_id) == "completed"

    spans = list(exporter.get_finished_spans())
    trace_id = request.get_span_context().trace_id
    assert {s.context.trace_id for s in spans if s.context} == {trace_id}, "one trace"
    upstream = _one(spans, "upstream POST /entries")
    call = _one(spans, "producer_api.entry_created")
    unit = _one(spans, "uow ProducerAPI.entry_created")
    publish = _one(spans, "publish entry.created")
    consume = _one(spans, "process entry.created")
    analysis = _one(spans, f"analysis {world.settings.analysis_model}")
    image = _one(spans, f"image {world.settings.image_model}")
    completion = _one(spans, "uow VisualizationService._steps")
    claim = _one(spans, "uow VisualizationService._claim")
    checkpoint = _one(spans, "uow VisualizationService._analysis_step")

    # Parent links: the caller's span down to the publish, the message to the consumer,
    # the consumer to everything the job did.
    assert _parent(call) == _id(upstream)
    assert _parent(unit) == _id(call)
    assert _parent(publish) == _id(unit)  # published by the unit's commit
    assert _parent(consume) == _id(publish)
    for child in (claim, analysis, checkpoint, image, completion):
        assert _parent(child) == _id(consume), child.name
    # In order.
    order = [publish, consume, claim, analysis, checkpoint, image, completion]
    starts = [s.start_time or 0 for s in order]
    assert starts == sorted(starts), [
        s.name for s in sorted(order, key=lambda s: s.start_time or 0)
    ]
    assert (image.end_time or 0) <= (completion.start_time or 0)

    assert publish.kind is SpanKind.PRODUCER and consume.kind is SpanKind.CONSUMER
    assert analysis.kind is SpanKind.CLIENT and completion.kind is SpanKind.CLIENT
    assert publish.attributes is not None and consume.attributes is not None
    assert publish.attributes["emotionviz.entry_ref"] == log_ref(entry_id)
    assert consume.attributes["messaging.message.id"] == publish.attributes["messaging.message.id"]
    assert consume.attributes["emotionviz.entry_ref"] == log_ref(entry_id)
    assert consume.attributes["emotionviz.user_ref"] == log_ref(world.user_id)
    assert consume.attributes["emotionviz.outcome"] == "ok"
    for model_call, model in (
        (analysis, world.settings.analysis_model),
        (image, world.settings.image_model),
    ):
        assert model_call.attributes is not None
        assert model_call.attributes["gen_ai.request.model"] == model
        assert model_call.attributes["emotionviz.outcome"] == "ok"
    assert completion.attributes is not None
    assert completion.attributes["emotionviz.outcome"] == "autocommit"  # one pipeline
    assert unit.attributes is not None and unit.attributes["emotionviz.outcome"] == "committed"
    # References, models and outcomes only: no entry text, no person's id, no key.
    values = json.dumps([dict(s.attributes or {}) for s in spans])
    assert "Quillbrook" not in values and KEY not in values
    assert str(entry_id) not in values and str(world.user_id) not in values


def test_a_retried_entry_stays_in_its_trace(world: World, exporter: InMemorySpanExporter) -> None:
    # The first analysis is refused with a quota's 429 (retry in 0.1 s): Dramatiq
    # retries the message, with its options.
    world.emulator.faults.append(Fault(kind="429", target="analysis", seconds=0.1))
    entry_id = world.entry()
    world.api.entry_created(entry_id, world.user_id)
    world.run_until(_finished(exporter, "process entry.created", count=2))
    assert world.status(entry_id) == "completed"

    spans = list(exporter.get_finished_spans())
    publish = _one(spans, "publish entry.created")
    first, second = sorted(
        (s for s in spans if s.name == "process entry.created"), key=lambda s: s.start_time or 0
    )
    assert first.context and second.context and publish.context
    assert first.context.trace_id == second.context.trace_id == publish.context.trace_id
    assert _parent(first) == _parent(second) == _id(publish)
    assert first.attributes and second.attributes
    assert (first.attributes["emotionviz.attempt"], second.attributes["emotionviz.attempt"]) == (
        1,
        2,
    )
    assert first.attributes["emotionviz.outcome"] == "error"
    refused = [s for s in spans if s.name.startswith("analysis ")]
    assert [dict(s.attributes or {})["emotionviz.outcome"] for s in refused] == [
        "rate_limited",
        "ok",
    ]


HOSTILE: list[Any] = [
    {"traceparent": "00-not-a-trace-01"},
    {"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"},  # all-zero ids: invalid
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # not an object
    {"traceparent": ["a", "list"]},
    {f"k{i}": "v" for i in range(50)},
    {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" + "x" * 600},
]


def test_a_hostile_trace_context_is_ignored_and_the_entry_completes(
    world: World, exporter: InMemorySpanExporter
) -> None:
    sent: dict[str, uuid.UUID] = {}
    for hostile in HOSTILE:
        entry_id = world.entry()
        message = envelope(
            EntryCreated(entry_id=entry_id, user_id=world.user_id), {tracing.OPTION: hostile}
        )
        world.broker.enqueue(message)
        sent[message.message_id] = entry_id
    with capture_logs() as logs:
        world.run_until(_finished(exporter, "process entry.created", count=len(HOSTILE)))
    assert [world.status(e) for e in sent.values()] == ["completed"] * len(HOSTILE)
    consumed = [s for s in exporter.get_finished_spans() if s.name == "process entry.created"]
    assert all(s.parent is None for s in consumed)  # each a trace of its own
    assert all(dict(s.attributes or {})["emotionviz.outcome"] == "ok" for s in consumed)
    ignored = [line for line in logs if line["event"].startswith("trace context ignored")]
    assert sorted(line["message_id"] for line in ignored) == sorted(sent)
    assert {line["log_level"] for line in ignored} == {"warning"}


def test_tracing_off_writes_no_context_and_makes_no_span(world: World) -> None:
    provider = TracerProvider()
    unused = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(unused))
    tracing.use(None)
    entry_id = world.entry()
    world.api.entry_created(entry_id, world.user_id)
    (body,) = _queued_bodies(world)
    assert tracing.OPTION not in json.loads(body)["options"]
    world.run_until(lambda: world.status(entry_id) == "completed")
    assert tracing.tracer() is None and unused.get_finished_spans() == ()
    provider.shutdown()


def test_a_deferred_message_carries_the_jobs_trace(
    world: World, exporter: InMemorySpanExporter
) -> None:
    """A deferral (a lease held elsewhere: entrypoints/actors.py) is published from
    inside the job: the delayed message carries the job's trace onward."""
    job = tracing.tracer().start_span("process entry.created")
    with trace.use_span(job, end_on_exit=True):
        world.producer.publish(
            EntryCreated(entry_id=uuid.uuid4(), user_id=world.user_id), delay_ms=600_000
        )
    client = redis.Redis.from_url(world.redis_url)
    keys = queue_keys(world.settings.redis_namespace, EntryCreated.queue_name)
    try:
        (body,) = client.hvals(keys.delayed_bodies)
    finally:
        client.close()
    carried = json.loads(body)["options"][tracing.OPTION]["traceparent"]
    publish = _one(list(exporter.get_finished_spans()), "publish entry.created")
    assert (
        publish.context is not None and job.get_span_context().trace_id == publish.context.trace_id
    )
    assert _parent(publish) == job.get_span_context().span_id
    # (flags: sampled, and with this SDK the trace id's "random" bit too)
    assert carried.startswith(f"00-{publish.context.trace_id:032x}-{publish.context.span_id:016x}-")
