"""The paid-call ledger the provider wrappers write to (domain/ledger.py: Ledger), and
the per-person daily budget they check before a call.

- ``record``: one INSERT in autocommit per attempt, right after it (so the row survives
  the job's later failure), with its estimated cost from the price table (returned:
  the providers count it, workers/providers/paid_calls.py). A failed write is logged
  and counted (emotionviz_paid_calls_unrecorded_total), never raised: the call happened
  and its result is worth keeping. A person erased while the call ran is not named by
  its row (db/repositories/ledger.py: the cost is kept, with no person or entry).
- ``holding``: inside it (an entry's job, workers/services/visualize.py) the rows of
  answers the job used wait on the thread instead (a failed attempt's row is written
  at once), and the job's next write carries them in its own round trip
  (``riding``: the analysis checkpoint, the completion), which saves an entry two units
  of work and two round trips (docs/benchmarks.md). What no write carried (a failed
  call, a refused picture, a failed write) is written at the end of the block, each
  row as ``record`` writes it. The price: a process killed between a call and the
  job's next write (the picture's check and storage: ~10 ms on a disk, longer to an
  object store), or a time limit landing in that write, loses that call's row (lost,
  never written twice: ``riding``).
- ``check_budget``: with USER_DAILY_BUDGET_USD set, the person's spend since 00:00 UTC,
  cached per process for ``cache_s`` (plus what this process recorded since), so an
  entry's calls cost no extra round trip. The budget is a soft limit: calls already
  under way, and other processes' calls within ``cache_s``, may pass it a little.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

from db.repositories.ledger import ledger_of
from db.uow import UnitOfWork
from domain.errors import DatabaseUnavailableError
from domain.ledger import (
    OK,
    Attempt,
    CallKind,
    CallOwner,
    PaidCall,
    PriceTable,
    attempt_cost,
    budget_exceeded,
    start_of_utc_day,
)
from workers.logging import get_logger
from workers.providers.paid_calls import count_unrecorded

log = get_logger("emotionviz.ledger")

_CACHE_MAX = 10_000  # people; past it the cache starts over


class PaidCallLedger:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        prices: PriceTable,
        daily_budget_usd: Decimal | None = None,
        cache_s: float = 1.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.uow_factory, self.prices = uow_factory, prices
        self.budget, self.cache_s, self.clock = daily_budget_usd, cache_s, clock
        self._lock = threading.Lock()
        # (person, UTC day) -> (spend, when read): read from the database at most once
        # per cache_s; what this process records meanwhile is added to it.
        self._spent: dict[tuple[uuid.UUID, datetime], tuple[Decimal, float]] = {}
        self._held = threading.local()  # .calls: this thread's held rows (``holding``)

    def record(self, kind: CallKind, owner: CallOwner, attempt: Attempt) -> Decimal:
        cost = attempt_cost(attempt, self.prices.of(attempt.model))
        call = PaidCall(kind, owner, attempt, cost)
        held: list[PaidCall] | None = getattr(self._held, "calls", None)
        # Only an answer that was used waits: its job's next write follows at once (a
        # failed attempt may be followed by another call: a repair, a retry). So a
        # thread holds a row or has a call in flight, never both, and a kill -9 cuts
        # at most one row per thread, as before (scripts/chaos.py's bound).
        if held is not None and attempt.outcome == OK:
            held.append(call)
        else:
            self._write(call)
        if cost and owner.user_id is not None and self.budget is not None:
            key = (owner.user_id, start_of_utc_day(self.clock()))
            with self._lock:
                if key in self._spent:
                    spent, at = self._spent[key]
                    self._spent[key] = (spent + cost, at)
        return cost

    def _write(self, call: PaidCall) -> None:
        # Twice at most: a pooled connection the server closed (a restart, a killed
        # backend) fails once and is replaced; the row is worth the second round trip.
        for attempt_no in (1, 2):
            try:
                with self.uow_factory() as uow:
                    uow.single_statement()
                    ledger_of(uow).record_all([call])
                return
            except DatabaseUnavailableError:
                if attempt_no == 2:
                    log.warning("paid call not recorded: the database is unavailable")
                    count_unrecorded(call.attempt.model)
            except Exception as exc:  # noqa: BLE001 - the call matters more than its row
                log.warning("paid call not recorded in the ledger", error=type(exc).__name__)
                count_unrecorded(call.attempt.model)
                return

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """The rows of this thread's attempts inside the block wait for a write to carry
        them (``riding``); those still waiting at its end are written then, one by one.
        Nested, the outermost block writes."""
        if getattr(self._held, "calls", None) is not None:
            yield
            return
        self._held.calls = []
        try:
            yield
        finally:
            calls, self._held.calls = self._held.calls, None
            self._write_left(calls)

    def _write_left(self, calls: list[PaidCall]) -> None:
        for done, call in enumerate(calls):
            try:
                self._write(call)  # never raises an Exception
            except BaseException:
                # An interruption (the time limit, a shutdown) landed in a write: the
                # rows not written yet are counted, as any row that could not be.
                for lost in calls[done:]:
                    count_unrecorded(lost.attempt.model)
                log.warning("paid calls not recorded: interrupted", rows=len(calls) - done)
                raise

    @contextlib.contextmanager
    def riding(self) -> Iterator[list[PaidCall]]:
        """The rows waiting on this thread, for the write made inside the block to carry
        in its transaction. They stop waiting when the block ends, unless it raised an
        Exception: the write failed and rolled back (or never sent them), and they are
        left to ``holding``'s end. An interruption that is no Exception (the time limit,
        a shutdown) may land after the write committed (psycopg's pipeline sends its
        Sync even when its block raised): its rows count as carried. So a row may be
        lost, as a call cut by a kill is, but never written twice."""
        held: list[PaidCall] | None = getattr(self._held, "calls", None)
        taken = list(held or ())
        carried = True
        try:
            yield taken
        except Exception:
            carried = False
            raise
        finally:
            if carried and held is not None:
                del held[: len(taken)]

    def check_budget(self, owner: CallOwner) -> None:
        if self.budget is None or owner.user_id is None:
            return
        now = self.clock()
        spent = self.spent_today(owner.user_id, now)
        if spent >= self.budget:
            log.info("daily budget reached, the work waits for the next UTC day")
            raise budget_exceeded(self.budget, spent, now)

    def spent_today(self, user_id: uuid.UUID, now: datetime) -> Decimal:
        day = start_of_utc_day(now)
        key = (user_id, day)
        with self._lock:
            cached = self._spent.get(key)
        if cached is not None and time.monotonic() - cached[1] < self.cache_s:
            return cached[0]
        with self.uow_factory() as uow:
            uow.single_statement()
            spent = ledger_of(uow).spent_since(user_id, day)
        with self._lock:
            if len(self._spent) >= _CACHE_MAX:
                self._spent.clear()
            self._spent[key] = (spent, time.monotonic())
        return spent
