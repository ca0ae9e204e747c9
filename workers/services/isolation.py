"""Suspects run alone, so a crash is blamed on the row that caused it.

A row whose earlier claim never finished (its worker process died holding it) is a
suspect: it may be the poison that kills processes. If it ran beside other jobs and
killed the process again, every row the process held would be counted as a crash
(``claim_count``), and innocent rows could reach ``MAX_CLAIMS`` beside a poison entry.
So within a process, ordinary jobs share a lock and a suspect takes it exclusively:
it waits for the jobs under way, new jobs wait for it (before they claim anything),
and if it kills the process it is the only row running. Other suspects claimed
meanwhile hold their rows while they wait for their turn, but uncounted
(services/visualize.py): they were not running, so that crash is not theirs. Suspects
are rare (only after a crash) and brief; ordinary jobs never wait for each other.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class SuspectLock:
    """A readers-writer lock that prefers the writer: ordinary jobs are readers, a
    suspect is the writer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._parked = 0  # threads waiting for their turn, of either kind

    @property
    def waiting(self) -> int:
        """Jobs waiting for their turn now (behind a suspect, or a suspect behind the
        jobs under way). Counted under the lock: a thread is counted once it holds it on
        its way to waiting, and it lets go only by waiting."""
        with self._cond:
            return self._parked

    # An interruption (Dramatiq's time limit raises TimeLimitExceeded asynchronously in
    # the worker thread) can land while a job waits here: the counts are changed only
    # where no such exception can leave them wrong (a leaked writer or reader would
    # stop every later job of the process).

    @contextlib.contextmanager
    def ordinary(self) -> Iterator[None]:
        entered = False
        try:
            with self._cond:
                if self._writer or self._writers_waiting:
                    self._parked += 1
                    try:
                        while self._writer or self._writers_waiting:
                            self._cond.wait()
                    finally:
                        self._parked -= 1
                self._readers += 1
                entered = True  # no call in between: an async exception cannot land
            yield
        finally:
            if entered:
                with self._cond:
                    self._readers -= 1
                    self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self, holding_ordinary: bool = False) -> Iterator[None]:
        """Exclusive. ``holding_ordinary``: the caller holds an ordinary share it gives
        up while it waits (it has just learned that its row is a suspect)."""
        with self._cond:
            self._writers_waiting += 1
            if holding_ordinary:
                self._readers -= 1
                self._cond.notify_all()
            self._parked += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            except BaseException:  # interrupted while waiting: leave the counts as found
                self._writers_waiting -= 1
                if holding_ordinary:
                    self._readers += 1
                self._cond.notify_all()
                raise
            finally:
                self._parked -= 1
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                if holding_ordinary:
                    self._readers += 1  # given back to the caller's ordinary share
                self._cond.notify_all()
