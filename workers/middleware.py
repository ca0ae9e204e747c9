"""Dramatiq middleware that binds message id, actor, attempt and entry id to every log
line written while a message is processed (structlog contextvars)."""

from __future__ import annotations

from typing import Any

import structlog
from dramatiq.middleware import Middleware

# The ids a message body may carry; bound to the log context when present.
_BOUND_IDS = ("entry_id", "user_id", "session_id")


class LogContext(Middleware):
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
        structlog.contextvars.bind_contextvars(**context)

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        structlog.contextvars.clear_contextvars()

    def after_skip_message(self, broker: Any, message: Any) -> None:
        structlog.contextvars.clear_contextvars()
