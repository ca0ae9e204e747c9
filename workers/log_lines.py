"""Log lines that are bounded and reach the output whole, one write() per line.

Why both matter: a Dramatiq worker process writes to its parent through a pipe
(``sys.stderr`` is Dramatiq's ``StreamablePipe``, one length-prefixed frame per
``write``). Frames of more than 16 KiB go out as two ``write`` calls (header, then
payload), and any ``write`` over PIPE_BUF (4096 bytes on Linux) may be split by the
kernel; several threads logging at once then splice their bytes into each other's
frames, the parent reads a payload as a length and stops relaying (Dramatiq issue
#888). So every line here is rendered to at most ``max_bytes`` (default 4,000: with the
4-byte frame header, under PIPE_BUF) and written with one call, under one lock shared
by structlog and the standard library's logging. Lines over the bound are shortened
field by field (the end of a traceback is kept), never cut mid-JSON.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from typing import Any, TextIO

# Kept, small, when a line must be reduced to its essentials.
_CORE = ("timestamp", "level", "logger", "event", "message_id", "actor", "entry_id", "reason")
# (chars of JSON text per string, items per list or dict), tried in turn.
_SHRINK_STEPS = ((1000, 20), (300, 10), (100, 5), (40, 3))


def _fallback(value: Any) -> str:
    return repr(value)


def dumps(event: dict[str, Any]) -> str:
    # ensure_ascii: one char, one byte, and no raw control or bidi character in a line.
    return json.dumps(event, default=_fallback, ensure_ascii=True)


def _cut(text: str, budget: int, *, keep_end: bool) -> str:
    """``text`` cut so that its JSON form (escapes count) stays near ``budget`` chars."""
    if len(json.dumps(text)) - 2 <= budget:
        return text
    n = budget
    while n > 0 and len(json.dumps(text[:n] if not keep_end else text[-n:])) - 2 > budget:
        n //= 2  # escapes (\u0000 is six chars) make a char cost up to 12
    if keep_end:
        return "…" + text[len(text) - n :]
    return text[:n] + f"…(+{len(text) - n} chars)"


def _shrink(value: Any, budget: int, items: int, key: str = "") -> Any:
    """``value`` with strings cut to about ``budget`` chars of JSON (tracebacks keep
    their end) and containers to their first ``items`` items."""
    if isinstance(value, str):
        return _cut(value, budget, keep_end=key in ("exception", "stack"))
    if isinstance(value, dict):
        kept = list(value.items())[:items]
        return {str(k)[:64]: _shrink(v, budget, items, str(k)) for k, v in kept}
    if isinstance(value, list | tuple | set | frozenset):
        return [_shrink(v, budget, items) for v in list(value)[:items]]
    if value is None or isinstance(value, bool | int | float):
        return value
    return _shrink(repr(value), budget, items)


def bounded_json(event: dict[str, Any], max_bytes: int) -> str:
    """``event`` as one JSON line of at most ``max_bytes`` bytes (``max_bytes`` >= 512)."""
    line = dumps(event)
    if len(line) <= max_bytes:
        return line
    for budget, items in _SHRINK_STEPS:
        shrunk = {key: _shrink(value, budget, items, key) for key, value in event.items()}
        shrunk["truncated"] = True
        line = dumps(shrunk)
        if len(line) <= max_bytes:
            return line
    for budget in (60, 20):
        core = {key: _shrink(event[key], budget, 3, key) for key in _CORE if key in event}
        core["truncated"] = True
        line = dumps(core)
        if len(line) <= max_bytes:
            break
    return line


class BoundedJSONRenderer:
    """structlog's last processor: the event dict as a bounded JSON line."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def __call__(self, _logger: Any, _name: str, event: dict[str, Any]) -> str:
        return bounded_json(event, self.max_bytes)


class LineWriter:
    """Writes whole lines to one stream: one lock, one ``write`` call per line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def write_line(self, line: str) -> None:
        with self.lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class LineLogger:
    """A structlog logger writing each rendered event through a LineWriter."""

    def __init__(self, writer: LineWriter) -> None:
        self._writer = writer

    def msg(self, message: str) -> None:
        self._writer.write_line(message)

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


class LineLoggerFactory:
    def __init__(self, writer: LineWriter) -> None:
        self.writer = writer

    def __call__(self, *args: Any) -> LineLogger:
        return LineLogger(self.writer)


class LineHandler(logging.Handler):
    """The standard library's handler for every library logger (Dramatiq included):
    its formatter renders the bounded line, the writer writes it in one call. A record
    that cannot be formatted becomes a short line saying so, never a multi-line
    '--- Logging error ---' report on stderr."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception as exc:  # noqa: BLE001 - a log record must never break its caller
            line = dumps(
                {
                    "level": record.levelname.lower(),
                    "logger": record.name,
                    "event": "log record could not be formatted",
                    "reason": type(exc).__name__,
                }
            )
        with contextlib.suppress(Exception):  # nowhere left to report to
            self.writer.write_line(line)
