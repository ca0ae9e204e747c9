"""Dramatiq middleware: log and trace context per message, scrubbed failure reasons,
warm-up."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any

import structlog
from dramatiq.middleware import Middleware

from domain.errors import REASON_MAX_CHARS
from domain.redaction import redact
from domain.sanitize import one_line
from workers.logging import get_logger
from workers.messaging.failure_policy import stored_reason
from workers.observability import tracing

log = get_logger("emotionviz.worker")

# The ids a message body may carry; bound to the log context when present.
_BOUND_IDS = ("entry_id", "user_id", "session_id")


class LogContext(Middleware):
    """Binds message id, actor, attempt and entry id to every log line written while a
    message is processed (structlog contextvars); with tracing on, the message's span
    too (a CONSUMER span, child of the publish span its options carry: ``trace_id`` on
    every line, the model calls and units of work nested under it)."""

    def __init__(self) -> None:
        self._spans = threading.local()  # a worker thread processes one message at a time

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        tracing.resolve()  # decided before the first message, in the worker's process

    def before_process_message(self, broker: Any, message: Any) -> None:
        structlog.contextvars.clear_contextvars()
        context: dict[str, Any] = {
            "message_id": message.message_id,
            "actor": message.actor_name,
            "attempt": message.options.get("retries", 0) + 1,
        }
        if message.args and isinstance(message.args[0], dict):
            for key in _BOUND_IDS:
                value = message.args[0].get(key)
                if isinstance(value, str):
                    context[key] = value[:64]
        if tracing.tracer() is not None:
            try:
                context["trace_id"] = self._open_span(message, context)
            except Exception as exc:  # noqa: BLE001 - tracing never fails a job
                log.warning("no span for this message", reason=type(exc).__name__)
        structlog.contextvars.bind_contextvars(**context)

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        structlog.contextvars.clear_contextvars()
        self._close_span("error" if exception is not None else "ok", exception)

    def after_skip_message(self, broker: Any, message: Any) -> None:
        structlog.contextvars.clear_contextvars()
        self._close_span("skipped", None)

    def _open_span(self, message: Any, bound: dict[str, Any]) -> str:
        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind

        self._close_span("abandoned", None)  # a span a hook never closed: not leaked
        attributes: dict[str, str | int] = {
            "messaging.system": "dramatiq",
            "messaging.operation.type": "process",
            "messaging.destination.name": str(message.queue_name),
            "messaging.message.id": str(message.message_id)[:64],
            "emotionviz.actor": str(message.actor_name),
            "emotionviz.attempt": bound["attempt"],
        }
        attributes.update(tracing.refs({key: bound[key] for key in _BOUND_IDS if key in bound}))
        parent = tracing.extract(message.options, str(message.message_id))
        opened = tracing.tracer().start_span(
            f"process {message.actor_name}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
        )
        token = context.attach(trace.set_span_in_context(opened))
        self._spans.current = (opened, token)
        return f"{opened.get_span_context().trace_id:032x}"

    def _close_span(self, outcome: str, exception: BaseException | None) -> None:
        current = getattr(self._spans, "current", None)
        if current is None:
            return
        self._spans.current = None
        from opentelemetry import context

        opened, token = current
        context.detach(token)
        opened.set_attribute("emotionviz.outcome", outcome)
        if exception is not None:
            tracing.failed(opened, exception)
        opened.end()


class ScrubFailures(Middleware):
    """Dramatiq's Retries keeps the whole traceback of a failure in the message's
    options when it enqueues the retry; the dead letter inherits it. With a library's
    error that is SQL and its parameters, or a server's echo of our API key, stored in
    Redis for a week. Before a message is enqueued, its traceback becomes the stored
    reason of the failure being handled (one line, scrubbed, bounded)."""

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        traceback = message.options.get("traceback")
        if traceback is None:
            return
        handling = sys.exc_info()[1]  # Retries enqueues from within Dramatiq's except
        if handling is not None:
            message.options["traceback"] = stored_reason(handling)
        else:  # a delayed retry moving to its queue: already a reason, keep it short
            lines = [line for line in str(traceback).splitlines() if line.strip()]
            message.options["traceback"] = one_line(
                redact(lines[-1] if lines else ""), REASON_MAX_CHARS
            )


class WarmUp(Middleware):
    """Build the process's services when the worker boots, not on the first message:
    otherwise the first messages (a person's first question among them) pay for the
    SDK client, the providers and the first database connections, and every thread
    that arrives meanwhile builds them too."""

    def __init__(self, *builders: Callable[[], object]) -> None:
        self.builders = builders

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        # Before the consumers start: no message is taken until the process is warm.
        for build in self.builders:
            try:
                build()
            except Exception as exc:  # noqa: BLE001 - best effort: the first message
                # meets the same problem again and handles it with its retry policy.
                log.warning(
                    "warm-up step failed",
                    step=getattr(build, "__name__", "?"),
                    reason=f"{type(exc).__name__}: {str(exc)[:200]}",
                )
