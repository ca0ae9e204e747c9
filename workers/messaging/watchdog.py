"""A worker process whose consumer or worker thread died stops, with a non-zero exit.

Dramatiq runs each queue's consumer and each worker in a thread and never looks at
them again: a thread killed by an exception leaves a process that is alive, heart-beats
to Redis (so nobody takes its messages back) and does nothing. The watchdog checks the
threads every WATCHDOG_INTERVAL_S; on the first dead one it logs which, asks Dramatiq
to stop (SIGTERM to itself: held messages are given back to the queue), and exits with
EXIT_CODE once Dramatiq has stopped the worker. Dramatiq's parent process then stops
with that code, and the supervisor (docker ``restart:``, systemd, Kubernetes) restarts
it. Without a supervisor, nothing would restart a process anyway.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

from dramatiq.middleware import Middleware

from workers.logging import get_logger

log = get_logger("emotionviz.watchdog")

EXIT_CODE = 70  # EX_SOFTWARE: an internal failure; Dramatiq's own codes are 1 to 4
# If a graceful stop has not ended the process by then, it ends without one.
STOP_GRACE_S = 120.0


class ThreadCensus:
    """The consumer and worker threads of this process, as Dramatiq announces them
    (the ``after_consumer_thread_boot`` and ``after_worker_thread_boot`` hooks: public;
    the Worker's own lists of them are not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._threads: list[tuple[str, threading.Thread]] = []

    def add(self, label: str, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.append((label, thread))

    def labels(self) -> list[str]:
        with self._lock:
            return [label for label, _ in self._threads]

    def dead(self) -> list[str]:
        """The threads that are no longer alive, by label."""
        with self._lock:
            threads = list(self._threads)
        return [label for label, thread in threads if not thread.is_alive()]

    def tally(self) -> tuple[int, int]:
        """(alive, announced) threads."""
        with self._lock:
            threads = [thread for _, thread in self._threads]
        return sum(1 for thread in threads if thread.is_alive()), len(threads)


def consumer_label(thread: threading.Thread) -> str:
    # By the thread's name only: which queue a ConsumerThread consumes is an attribute
    # Dramatiq does not document (issue 25: no private name for a log label).
    return f"consumer thread {thread.name}"


class Watchdog(Middleware):
    def __init__(self, interval_s: float, *, grace_s: float = STOP_GRACE_S) -> None:
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.stopping = threading.Event()
        self.tripped = threading.Event()
        self.threads = ThreadCensus()

    def after_consumer_thread_boot(self, broker: Any, thread: Any) -> None:
        self.threads.add(consumer_label(thread), thread)

    def after_worker_thread_boot(self, broker: Any, thread: Any) -> None:
        self.threads.add(f"worker thread {thread.name}", thread)

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)
        thread.start()

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.stopping.set()  # threads ending now are being stopped, not dying

    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        if self.tripped.is_set():
            log.critical("worker stopped after a thread died; exiting", exit_code=EXIT_CODE)
            os._exit(EXIT_CODE)

    def _watch(self) -> None:
        while not self.stopping.wait(self.interval_s):
            dead = self.threads.dead()
            if dead and not self.stopping.is_set():
                self._trip(dead)
                return

    def _trip(self, dead: list[str]) -> None:
        log.critical(
            "a worker thread is dead; stopping the process so that it is restarted",
            dead=dead,
            exit_code=EXIT_CODE,
        )
        self.tripped.set()
        os.kill(os.getpid(), signal.SIGTERM)  # Dramatiq's graceful stop
        time.sleep(self.grace_s)  # after_worker_shutdown normally exits before
        log.critical("the graceful stop took too long; exiting now", exit_code=EXIT_CODE)
        os._exit(EXIT_CODE)
