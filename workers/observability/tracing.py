"""OpenTelemetry tracing: one entry, one trace, from the producer API to the completion.

Off unless the standard variables ask for it, and free when off: nothing of
OpenTelemetry is imported, and every place that could trace first reads one module
global (``tracer()`` returns None) before any span work. On when, at the process's
first look (``resolve``, called by the producer and the worker's boot):

- ``OTEL_SDK_DISABLED`` is not ``true``, ``OTEL_TRACES_EXPORTER`` is not ``none``, and
  ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set: an SDK TracerProvider with that
  exporter behind a batch processor; the SDK itself reads the rest (``OTEL_SERVICE_NAME``,
  ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, the exporter's endpoint,
  headers, timeout); the service name defaults to ``emotionviz-workers``;
- or the host process (an upstream API using the producer API) already set an SDK
  TracerProvider globally: its spans and ours make one trace;
- or ``use(provider)`` was called (tests; a host that keeps its provider to itself).

The context travels in a message's ``options.trace_context`` (W3C ``traceparent`` and
``tracestate``, written by the API's configured propagator; docs/messages.md). A
message without it starts a trace of its own; a malformed one is ignored with a log
line, never failing the job. Attributes carry references, model names and outcomes
only: a person's ids (entry, user, session) as the keyed references the log lines
carry (``log_ref``: spans shipped to a trace store cannot be erased either, and one
reference finds both), message ids as they are; no entry text, no prompt, no secret
(docs/monitoring.md, "Tracing").
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any, cast

from workers.logging import get_logger, log_ref

log = get_logger("emotionviz.tracing")

TRACER_NAME = "emotionviz"
DEFAULT_SERVICE_NAME = "emotionviz-workers"
# The option of a Dramatiq message that carries the trace context (a flat object of
# short strings); bounded, so a hostile message cannot make us parse much.
OPTION = "trace_context"
_MAX_CONTEXT_KEYS = 4
_MAX_VALUE_CHARS = 512

_lock = threading.Lock()
_resolved = False
_tracer: Any = None  # an opentelemetry Tracer when on
_owned_provider: Any = None  # the provider we built from the variables (shut down by us)


def tracer() -> Any:
    """The tracer when tracing is on, else None (one global read once resolved)."""
    if _resolved:
        return _tracer
    return resolve()


def enabled() -> bool:
    return tracer() is not None


def exporter_wanted(environ: Mapping[str, str]) -> str | None:
    """The exporter the standard variables ask for (``otlp``, ``console``), or None."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named == "none":
        return None
    if named:
        return named.split(",")[0].strip()
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    ):
        return "otlp"
    return None


def resolve(environ: Mapping[str, str] | None = None) -> Any:
    """Decide once per process whether to trace (module docstring); the tracer or None.
    A configuration the SDK cannot honour (an unknown exporter, OTLP over gRPC, which is
    not installed, an ``OTEL_PROPAGATORS`` entry that is not installed) leaves tracing
    off with one error line: a worker still works, and a publish is never refused."""
    global _resolved, _tracer, _owned_provider
    with _lock:
        if _resolved:
            return _tracer
        environ = os.environ if environ is None else environ
        wanted = exporter_wanted(environ)
        provider: Any = None
        if wanted is not None:
            try:
                _load_propagators()
                provider = _provider_from(wanted, environ)
            except Exception as exc:  # noqa: BLE001 - tracing must never stop a worker
                log.error(
                    "tracing is off: the OTEL_* variables cannot be honoured",
                    exporter=wanted,
                    reason=f"{type(exc).__name__}: {str(exc)[:200]}",
                )
            else:
                _owned_provider = provider
                _set_global(provider)
                log.info("tracing on", exporter=wanted)
        else:
            provider = _host_provider()
            if provider is not None:
                try:
                    _load_propagators()
                except Exception as exc:  # noqa: BLE001 - as above
                    log.error(
                        "tracing is off: the OTEL_* variables cannot be honoured",
                        reason=f"{type(exc).__name__}: {str(exc)[:200]}",
                    )
                    provider = None
        _install(provider)
        return _tracer


def use(provider: Any) -> None:
    """Trace with ``provider`` (an SDK TracerProvider), or stop tracing (None), from
    now on in this process. For tests, and a host that keeps its provider to itself."""
    global _resolved
    with _lock:
        _install(provider)
        _resolved = True


def shutdown() -> None:
    """Flush and stop the provider built from the variables (the SDK also does it at
    exit)."""
    if _owned_provider is not None:
        _owned_provider.shutdown()


def _install(provider: Any) -> None:
    global _resolved, _tracer
    from db import uow

    if provider is None:
        _tracer = None
        uow.trace_units(None)
    else:
        _tracer = provider.get_tracer(TRACER_NAME)
        uow.trace_units(UnitSpans(_tracer))
    _resolved = True


def _load_propagators() -> None:
    """Load the propagators ``OTEL_PROPAGATORS`` names now: OpenTelemetry resolves them
    when ``opentelemetry.propagate`` is first imported and raises there for one that is
    not installed (``b3`` without its package), which must turn tracing off here rather
    than fail every publish later."""
    import opentelemetry.propagate  # noqa: F401 - the import is the check


def _provider_from(exporter_name: str, environ: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    exporter: Any
    if exporter_name == "otlp":
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        if protocol != "http/protobuf":
            raise ValueError(f"OTLP protocol {protocol!r}: only http/protobuf is installed")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    elif exporter_name == "console":
        exporter = ConsoleSpanExporter()
    else:
        raise ValueError(f"OTEL_TRACES_EXPORTER={exporter_name!r}: use otlp, console or none")
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _set_global(provider: Any) -> None:
    """Ours becomes the process's provider too, unless the host set one already."""
    from opentelemetry import trace

    if _is_sdk_provider(trace.get_tracer_provider()):
        return
    trace.set_tracer_provider(provider)


def _host_provider() -> Any:
    """An SDK provider the host process set globally, if OpenTelemetry is loaded at all
    (checked without importing it: a process that never traces never loads it)."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    provider = api.get_tracer_provider()
    return provider if _is_sdk_provider(provider) else None


def _is_sdk_provider(provider: Any) -> bool:
    sdk = sys.modules.get("opentelemetry.sdk.trace")
    return sdk is not None and isinstance(provider, sdk.TracerProvider)


# --- the context in a message ----------------------------------------------------------


def refs(ids: Mapping[str, object]) -> dict[str, str]:
    """Span attributes for a person's ids: ``entry_id`` -> ``emotionviz.entry_ref``, the
    reference a log line carries for it (never the id itself)."""
    return {
        f"emotionviz.{key.removesuffix('_id')}_ref": log_ref(str(value))
        for key, value in ids.items()
    }


def start_publish(actor: str, queue: str, ids: Mapping[str, str]) -> tuple[Any, dict[str, Any]]:
    """A PRODUCER span for one message (a child of the current span), and the options
    that carry it to the consumer. End it with ``end``. Only when ``tracer()`` is on."""
    from opentelemetry import propagate, trace
    from opentelemetry.trace import SpanKind

    attributes: dict[str, str] = {
        "messaging.system": "dramatiq",
        "messaging.operation.type": "send",
        "messaging.destination.name": queue,
        "emotionviz.actor": actor,
    }
    attributes.update(refs(ids))
    opened = tracer().start_span(f"publish {actor}", kind=SpanKind.PRODUCER, attributes=attributes)
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(opened))
    return opened, {OPTION: carrier} if carrier else {}


def end(opened: Any, exc: BaseException | None = None, *, message_id: str | None = None) -> None:
    """End a publish span: the id the message was sent under, or the failure."""
    if message_id is not None:
        opened.set_attribute("messaging.message.id", message_id)
    if exc is not None:
        failed(opened, exc)
    opened.end()


def extract(options: Mapping[str, Any], message_id: str) -> Any:
    """The parent context a message's options carry, or None (none, or malformed: one
    warning line, and the message is processed as if it had none)."""
    carrier = options.get(OPTION)
    if carrier is None:
        return None
    if not (
        isinstance(carrier, dict)
        and 0 < len(carrier) <= _MAX_CONTEXT_KEYS
        and all(
            isinstance(k, str) and isinstance(v, str) and len(v) <= _MAX_VALUE_CHARS
            for k, v in carrier.items()
        )
    ):
        _ignored(message_id, "not an object of a few short strings")
        return None
    from opentelemetry import propagate, trace

    try:
        context = propagate.extract(carrier)
    except Exception as exc:  # noqa: BLE001 - a hostile value never fails the job
        _ignored(message_id, f"the propagator refused it ({type(exc).__name__})")
        return None
    if not trace.get_current_span(context).get_span_context().is_valid:
        _ignored(message_id, "no valid traceparent")
        return None
    return context


def _ignored(message_id: str, why: str) -> None:
    log.warning(
        "trace context ignored: the message starts a trace of its own",
        message_id=message_id[:64],
        reason=why,
    )


@contextlib.contextmanager
def span(
    name: str, attributes: Mapping[str, str | int] | None = None, kind: str = "INTERNAL"
) -> Iterator[Any]:
    """A span around the block, current inside it (its children are ours and the
    libraries'); a no-op yielding None when tracing is off. An exception ends it with
    an error status naming the exception's class, never its message."""
    current = tracer()
    if current is None:
        yield None
        return
    from opentelemetry.trace import SpanKind

    with current.start_as_current_span(
        name,
        kind=SpanKind[kind],
        attributes=dict(attributes or {}),
        record_exception=False,
        set_status_on_exception=False,
    ) as opened:
        try:
            yield opened
        except BaseException as exc:
            failed(opened, exc)
            raise


def failed(opened: Any, exc: BaseException, error_type: str | None = None) -> None:
    """Mark a span failed: ``error.type`` and the status, the class name only (an
    exception's text may hold SQL parameters, a model's words or a server's echo)."""
    from opentelemetry.trace import Status, StatusCode

    kind = error_type or type(exc).__name__
    opened.set_attribute("error.type", kind)
    opened.set_status(Status(StatusCode.ERROR, kind))


class UnitSpans:
    """A span per unit of work inside a trace (db/uow.py calls it; db/ knows nothing of
    OpenTelemetry): named after the function that opened the unit, current while it
    runs (what it publishes after its commit nests under it), ended with its outcome.
    A unit outside any trace (a lease renewal, the events dispatcher's claims, the
    scheduler's reads) gets none: a root span per renewal would bury the entries'
    traces and cost a span each."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind

        self._tracer, self._context, self._trace = tracer, context, trace
        self._kind = SpanKind.CLIENT

    def open(self, module: str, function: str) -> object:
        if not self._trace.get_current_span().get_span_context().is_valid:
            return None
        try:
            opened = self._tracer.start_span(
                f"uow {function}",
                kind=self._kind,
                attributes={
                    "db.system.name": "postgresql",
                    "code.function.name": f"{module}.{function}",
                },
            )
            return opened, self._context.attach(self._trace.set_span_in_context(opened))
        except Exception as exc:  # noqa: BLE001 - tracing never fails a unit of work
            log.warning("no span for this unit of work", reason=type(exc).__name__)
            return None

    def close(self, handle: object, outcome: str, exc: BaseException | None) -> None:
        if handle is None:
            return
        opened, token = cast(tuple[Any, Any], handle)
        self._context.detach(token)
        opened.set_attribute("emotionviz.outcome", outcome)
        if exc is not None:
            failed(opened, exc)
        opened.end()
