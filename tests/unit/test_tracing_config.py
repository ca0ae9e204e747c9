"""Tracing is off unless the standard OTEL_* variables name an exporter, and then free:
nothing of OpenTelemetry is even imported. On, the SDK honours the standard variables
(service name, resource attributes). Each case in a fresh interpreter, as a worker
process starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from workers.observability.tracing import exporter_wanted

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "x"}, None),  # a name alone exports nothing
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
    ],
)
def test_the_standard_variables_decide(environ: dict[str, str], wanted: str | None) -> None:
    assert exporter_wanted(environ) == wanted


def _run(code: str, **otel: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(otel)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


_OFF = """
import json, sys
from db import uow
from workers.messaging import middleware, producer
from workers.observability import tracing
from workers.providers import factory, traced
resolved = tracing.resolve()
# (redis-py itself loads the SDK's metrics when the SDK is installed; nothing of tracing.)
tracing_modules = ("opentelemetry.sdk.trace", "opentelemetry.propagate", "opentelemetry.exporter")
print(json.dumps({
    "tracer": repr(resolved),
    "unit_tracer": repr(uow._unit_tracer),
    "loaded": sorted(m for m in sys.modules if m.startswith(tracing_modules)),
    "global provider": type(sys.modules["opentelemetry.trace"].get_tracer_provider()).__name__
    if "opentelemetry.trace" in sys.modules else None,
}))
"""


def test_off_by_default_loads_nothing_of_tracing_and_sets_no_provider() -> None:
    done = _run(_OFF)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) in (
        {"tracer": "None", "unit_tracer": "None", "loaded": [], "global provider": None},
        {
            "tracer": "None",
            "unit_tracer": "None",
            "loaded": [],
            "global provider": "ProxyTracerProvider",
        },
    )


def test_off_when_the_exporter_is_none_even_with_an_endpoint() -> None:
    done = _run(_OFF, OTEL_TRACES_EXPORTER="none", OTEL_EXPORTER_OTLP_ENDPOINT="http://c:4318")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["loaded"] == []


_ON = """
from workers.observability import tracing
assert tracing.resolve() is not None
with tracing.span("probe", tracing.refs({"entry_id": "6f1c0a7e-0000-4000-8000-000000000001"})):
    pass
tracing.shutdown()
"""


def _exported(stdout: str) -> dict[str, object]:
    start = stdout.index("{")
    span = json.loads(stdout[start : stdout.rindex("}") + 1])
    assert isinstance(span, dict)
    return span


def test_on_with_the_console_exporter_and_a_default_service_name() -> None:
    done = _run(_ON, OTEL_TRACES_EXPORTER="console")
    assert done.returncode == 0, done.stderr
    span = _exported(done.stdout)
    assert span["name"] == "probe"
    resource = span["resource"]
    assert isinstance(resource, dict)
    assert resource["attributes"]["service.name"] == "emotionviz-workers"
    assert "6f1c0a7e-0000-4000-8000-000000000001" not in done.stdout  # a reference only


def test_the_sdk_honours_the_service_name_and_resource_attributes() -> None:
    done = _run(
        _ON,
        OTEL_TRACES_EXPORTER="console",
        OTEL_SERVICE_NAME="visualizer-eu",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=staging",
    )
    assert done.returncode == 0, done.stderr
    resource = _exported(done.stdout)["resource"]
    assert isinstance(resource, dict)
    assert resource["attributes"]["service.name"] == "visualizer-eu"
    assert resource["attributes"]["deployment.environment"] == "staging"


@pytest.mark.parametrize(
    "otel",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_variables_it_cannot_honour_leave_tracing_off_with_one_line(otel: dict[str, str]) -> None:
    code = "from workers.observability import tracing; print(repr(tracing.resolve()))"
    done = _run(code, **otel)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "None"
    assert "tracing is off: the OTEL_* variables cannot be honoured" in done.stdout + done.stderr


def test_the_producer_apis_span_names_references_and_the_step_as_it_is() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from workers.logging import log_ref
    from workers.messaging.producer import request_span
    from workers.observability import tracing

    provider, spans = TracerProvider(), InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    session_id = uuid.uuid4()
    tracing.use(provider)
    try:
        with request_span("submit_answer", session_id=session_id, step=2):
            pass
    finally:
        tracing.use(None)
    (span,) = spans.get_finished_spans()
    assert span.name == "producer_api.submit_answer"
    assert dict(span.attributes or {}) == {
        "emotionviz.session_ref": log_ref(session_id),
        "emotionviz.step": 2,
    }


_PROPAGATOR_MISSING = """
import json, uuid
import dramatiq
from dramatiq.brokers.stub import StubBroker
from domain.messages import EntryCreated
from workers.messaging.producer import Producer
from workers.observability import tracing
broker = StubBroker()
broker.declare_queue("visualizations")
producer = Producer(broker)  # resolves: tracing must be off, not half on
message = EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4())
sent = producer.publish(message)
(queued,) = broker.queues["visualizations"].queue
body = dramatiq.Message.decode(queued)
print(json.dumps({"tracer": repr(tracing.tracer()), "sent": sent == body.message_id,
                  "options": sorted(body.options)}))
"""


def test_a_propagator_that_is_not_installed_turns_tracing_off_and_publishes() -> None:
    """OTEL_PROPAGATORS=b3 without its package: OpenTelemetry raises when its propagate
    module is imported; that must leave tracing off with one line, not fail publishes."""
    done = _run(_PROPAGATOR_MISSING, OTEL_TRACES_EXPORTER="console", OTEL_PROPAGATORS="b3")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {
        "tracer": "None",
        "sent": True,
        "options": [],
    }
    assert "tracing is off: the OTEL_* variables cannot be honoured" in done.stdout + done.stderr
    assert "b3" in done.stdout + done.stderr


def test_a_publish_span_that_cannot_start_publishes_untraced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dramatiq.brokers.stub import StubBroker
    from opentelemetry.sdk.trace import TracerProvider

    from domain.messages import EntryCreated
    from workers.messaging.producer import Producer
    from workers.observability import tracing

    def refuse(*args: object, **kwargs: object) -> None:
        raise ValueError("Propagator b3 not found")

    broker = StubBroker()
    broker.declare_queue("visualizations")
    tracing.use(TracerProvider())
    try:
        producer = Producer(broker)
        monkeypatch.setattr(tracing, "start_publish", refuse)
        sent = producer.publish(EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()))
    finally:
        tracing.use(None)
    (queued,) = broker.queues["visualizations"].queue
    import dramatiq

    body = dramatiq.Message.decode(queued)
    assert body.message_id == sent
    assert tracing.OPTION not in body.options
