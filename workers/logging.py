"""structlog, configured once per process: JSON in production, readable on a terminal.

Per-message context (message id, actor, attempt, entry id) is bound with contextvars
by the broker middleware, so every line of a job carries it. Every line, ours and the
libraries' (Dramatiq's included), is scrubbed of secrets down to nested values, has any
message object reduced to its actor and id (Dramatiq would print its arguments whole),
and is bounded and written whole (workers/log_lines.py).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from typing import Any

import structlog
from dramatiq import Message
from dramatiq.broker import MessageProxy

from domain.redaction import redact, redact_value, register_secret
from workers.log_lines import BoundedJSONRenderer, LineHandler, LineLoggerFactory, LineWriter

__all__ = ["configure_logging", "get_logger", "register_secret", "scrub"]

DEFAULT_MAX_LINE_BYTES = 4000


def scrub(text: str) -> str:
    """``text`` without registered secrets or credential-looking values."""
    return redact(text)


def _scrub_processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        if not key.startswith("_"):  # structlog's own bookkeeping (_record, ...)
            event[key] = redact_value(value)
    return event


def summarise_message(message: Any) -> str:
    """A message as a log line may name it: actor and id, never its arguments."""
    return f"{getattr(message, 'actor_name', '?')}[{getattr(message, 'message_id', '?')}]"


class MessageSummaries(logging.Filter):
    """Dramatiq logs messages with ``%s`` (``actor(arg0, arg1, ...)``, arguments whole,
    however large): each message argument of a record becomes its summary."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                summarise_message(arg) if isinstance(arg, Message | MessageProxy) else arg
                for arg in record.args
            )
        return True


def machine_name() -> str:
    """The machine a line comes from, in a fleet's merged logs: HOSTNAME as containers
    and Kubernetes set it (the pod's name), else the host's name."""
    return os.environ.get("HOSTNAME") or socket.gethostname()


def _machine_processor(host: str) -> Any:
    def add_machine(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("machine", host)
        return event

    return add_machine


def _log_thread_crash(args: threading.ExceptHookArgs) -> None:
    """A thread that dies logs one bounded line (not a bare traceback on stderr)."""
    if args.exc_type is SystemExit:
        return
    structlog.get_logger("emotionviz.threads").critical(
        "thread died",
        thread=getattr(args.thread, "name", "?"),
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


def configure_logging(
    level: str = "INFO", fmt: str = "auto", max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> None:
    stream = sys.stderr  # in a Dramatiq worker: the pipe to the parent process
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _scrub_processor,
    ]
    if use_json:  # lines from many machines end up in one place
        shared.insert(1, _machine_processor(machine_name()))
    renderer: Any = (
        BoundedJSONRenderer(max_line_bytes)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    writer = LineWriter(stream)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        logger_factory=LineLoggerFactory(writer),
        cache_logger_on_first_use=True,
    )
    # Library logs (dramatiq, alembic) through the same scrubbing, bounding writer.
    handler = LineHandler(writer)
    handler.addFilter(MessageSummaries())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))
    for noisy in ("httpx", "httpx2", "httpcore", "google_genai", "urllib3", "pgserver", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    threading.excepthook = _log_thread_crash


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
