"""structlog, configured once per process: JSON in production, readable on a terminal.

Per-message context (message id, actor, attempt, entry id) is bound with contextvars
by the broker middleware, so every line of a job carries it. Every line, ours and the
libraries' (Dramatiq's included), is scrubbed of secrets down to nested values, has any
message object reduced to its actor and id (Dramatiq would print its arguments whole),
and is bounded and written whole (workers/log_lines.py).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import os
import socket
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from domain.identifiers import UUID_RE
from domain.redaction import redact, redact_value, register_secret
from workers.log_lines import BoundedJSONRenderer, LineHandler, LineLoggerFactory, LineWriter

# structlog imports rich, when it is installed, only to pretty-print tracebacks (~90 ms
# of every CLI command's start, pygments included): we render tracebacks plainly
# (format_exc_info; plain_traceback on a terminal), so rich stays out of structlog's
# reach while it loads. structlog offers no setting for this: its optional import is
# the contract, checked by tests/contract/test_structlog.py. The CLI imports
# rich itself where it draws a table.
_hide_rich = "rich" not in sys.modules
if _hide_rich:
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` -> ImportError
try:
    import structlog
finally:
    if _hide_rich:
        del sys.modules["rich"]

__all__ = ["configure_logging", "get_logger", "log_ref", "register_secret", "scrub"]

DEFAULT_MAX_LINE_BYTES = 4000

# --- a person's ids become references (issue 24.5) ------------------------------------
# A log line never carries an id as it is stored: every UUID in a line (a bound
# entry_id, an id inside an error's text) is written as its reference, a keyed hash
# (HMAC-SHA256 with LOG_PSEUDONYM_KEY). Lines already shipped to a log store cannot be
# erased, so they must not name the person in the first place; an operator who needs a
# person's lines asks for the reference (`emotionviz user log-ref ID`) and searches for
# it. Kept raw: the ids of messages and events (they name work, not people).
_KEPT_RAW = frozenset({"message_id", "redis_id", "event_id", "event_ids", "redis_ids"})
# Without LOG_PSEUDONYM_KEY: a fixed key. References are still not the ids, but anyone
# holding an id can compute its reference (docs/operations.md).
_DEFAULT_PSEUDONYM_KEY = b"emotionviz-log-ref-v1"
_pseudonym_key: bytes = _DEFAULT_PSEUDONYM_KEY


def log_ref(value: uuid.UUID | str, key: str | bytes | None = None) -> str:
    """The reference a log line carries instead of the id ``value``."""
    if key is None:
        return _process_ref(str(value).lower())
    secret = key.encode() if isinstance(key, str) else key
    return _ref(secret or _DEFAULT_PSEUDONYM_KEY, str(value).lower())


def _ref(secret: bytes, value: str) -> str:
    return "ref_" + hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:20]


@functools.lru_cache(maxsize=4096)
def _process_ref(value: str) -> str:
    """With the process's key; a job's lines name the same few ids (cleared when the
    key changes)."""
    return _ref(_pseudonym_key, value)


def _refs_in(value: Any, keep: str) -> Any:
    if isinstance(value, str):
        if len(value) < 36 or "-" not in value:  # no UUID fits: most values (cheap)
            return value
        if len(value) == 36 and UUID_RE.fullmatch(value):  # a bound id, the common case
            return value if value.lower() == keep else log_ref(value)
        return UUID_RE.sub(lambda m: m[0] if m[0].lower() == keep else log_ref(m[0]), value)
    if isinstance(value, uuid.UUID):
        return value if str(value) == keep else log_ref(value)
    if isinstance(value, dict):
        return {k: _refs_in(v, keep) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_refs_in(v, keep) for v in value]
    return value


def _pseudonym_processor(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
    keep = str(event.get("message_id", "")).lower()  # the line's message may be named
    for key, value in event.items():
        if not key.startswith("_") and key not in _KEPT_RAW:
            event[key] = _refs_in(value, keep)
    return event


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
        dramatiq = sys.modules.get("dramatiq")  # none of its messages before it loads
        if dramatiq is not None and isinstance(record.args, tuple) and record.args:
            from dramatiq import Message
            from dramatiq.broker import MessageProxy

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


def _configured_pseudonym_key() -> str | None:
    """LOG_PSEUDONYM_KEY as the settings would read it (the environment, else ``.env`` in
    the working directory), for a process that configures logging without settings: a
    script or test calling ``configure_logging()`` directly (tests/integration/
    test_log_refs.py). Every entry point goes through ``bootstrap.configure_process``,
    which passes ``Settings.log_pseudonym_key`` (this module may not import the
    settings)."""
    if "LOG_PSEUDONYM_KEY" in os.environ:
        return os.environ["LOG_PSEUDONYM_KEY"].strip() or None
    try:
        lines = Path(".env").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        name, sep, value = line.partition("=")
        if sep and name.strip().upper() == "LOG_PSEUDONYM_KEY":
            value = value.split(" #")[0].strip().strip("'\"")
            return value or None
    return None


def configure_logging(
    level: str = "INFO",
    fmt: str = "auto",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    pseudonym_key: str | None = None,
) -> None:
    """``pseudonym_key``: LOG_PSEUDONYM_KEY as the settings hold it ("" for none: the fixed
    key); None only where no settings exist yet (``_configured_pseudonym_key``)."""
    global _pseudonym_key
    key = pseudonym_key if pseudonym_key is not None else _configured_pseudonym_key()
    if key:
        register_secret(key)
    _pseudonym_key = key.encode() if key else _DEFAULT_PSEUDONYM_KEY
    _process_ref.cache_clear()
    stream = sys.stderr  # in a Dramatiq worker: the pipe to the parent process
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _pseudonym_processor,
        _scrub_processor,
    ]
    if use_json:  # lines from many machines end up in one place
        shared.insert(1, _machine_processor(machine_name()))
    renderer: Any = (
        BoundedJSONRenderer(max_line_bytes)
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
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
