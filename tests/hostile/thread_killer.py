"""Loaded next to the worker module by tests/hostile/test_watchdog_exit.py only: kills a
worker thread or the consumer thread the way an exception that escapes Dramatiq's own
handlers does (a BaseException passes their ``except Exception``)."""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import Middleware


class ThreadKilled(BaseException):
    pass


class KillThreads(Middleware):
    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        if message.message_id.startswith("kill-worker-thread"):
            raise ThreadKilled("worker thread")

    def before_delay_message(self, broker: Any, message: Any) -> None:
        if message.message_id.startswith("kill-consumer"):
            raise ThreadKilled("consumer thread")


dramatiq.get_broker().add_middleware(KillThreads())
