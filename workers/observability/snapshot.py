"""The one snapshot of the work that ``status``, ``status --watch``, the console and the
metrics all read: the broker's queues and workers, and the rows (open rows by status,
rows finished in the last hour, stuck leases, the last hour's failure reasons, open
intake sessions by state, the paused queues, today's paid calls and the rows waiting on
a daily budget), and the last Redis failover seen.

A process computes it at most once every ``METRICS_CACHE_S`` seconds (2), however many
readers ask (every open console tab, a watching terminal, a scrape): the first reader
after that computes it, readers meanwhile wait for it and share it. Every database read
is driven by an index over the few rows that are open or recent (docs/benchmarks.md
times them on ten million entries); completed work is counted exactly over a window
(the last hour), never estimated. The broker's part comes from one collector per
deployment (workers/messaging/broker_state.py: SharedBrokerState), not a keyspace
SCAN on every machine.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from db.repositories.analytics import RefreshBacklog
from db.repositories.events import event_repository
from db.repositories.ledger import DaySpend, ledger_of
from db.repositories.pauses import PausedRow, pause_repository
from db.uow import UnitOfWork
from domain.ledger import start_of_utc_day
from workers.messaging.broker_state import BrokerState

SNAPSHOT_MAX_AGE_S = 2.0  # METRICS_CACHE_S's default
FINISHED_WINDOW_S = 3600  # completed and failed rows are counted over the last hour


@dataclass(frozen=True)
class WorkRows:
    """What the database says, every number exact."""

    open: dict[str, int]  # pending, processing, failed
    finished_last_hour: dict[str, int]  # completed, failed
    stuck: int  # processing past the lease
    failure_reasons_last_hour: list[str]
    intake: dict[str, int]  # open sessions: waiting_for_person, waiting_for_worker, failed
    # completion events' deliveries not (yet) delivered: pending, dead
    event_deliveries: dict[str, int] = field(default_factory=dict)
    paused_queues: list[PausedRow] = field(default_factory=list)  # issue 24.3
    # Issue 23.3: today's (UTC) paid calls, and the pending rows waiting on a budget.
    spend_today: DaySpend | None = None
    budget_waits: int = 0
    # The analytics refresher's queue (workers/entrypoints/analytics_refresh.py).
    analytics_backlog: RefreshBacklog | None = None


def read_rows(uow: UnitOfWork) -> WorkRows:
    """The database's part of the snapshot (each statement index-driven)."""
    v = uow.visualizations
    return WorkRows(
        open=v.open_status_counts(),
        finished_last_hour=v.finished_since(FINISHED_WINDOW_S),
        stuck=v.stuck_count(),
        failure_reasons_last_hour=v.recent_failure_reasons(FINISHED_WINDOW_S),
        intake=uow.intake.open_state_counts(),
    )


@dataclass(frozen=True)
class Snapshot:
    broker: BrokerState | None
    rows: WorkRows | None
    taken_at: float  # time.time() when it was read
    errors: dict[str, BaseException] = field(default_factory=dict)  # source -> what failed
    redis_failover: dict[str, Any] | None = None  # the last one seen (issue 22.1)

    @property
    def up(self) -> dict[str, bool]:
        return {"broker": "broker" not in self.errors, "database": "database" not in self.errors}


class SnapshotCache:
    """At most one computation per ``max_age_s`` in this process, shared by every reader."""

    def __init__(
        self,
        read_broker: Callable[[], BrokerState],
        uow_factory: Callable[[], UnitOfWork],
        *,
        max_age_s: float = SNAPSHOT_MAX_AGE_S,
        read_failover: Callable[[], dict[str, Any] | None] = lambda: None,
    ) -> None:
        self.read_broker = read_broker
        self.uow_factory = uow_factory
        self.read_failover = read_failover
        self.max_age_s = max_age_s
        self.computations = 0
        self._lock = threading.Lock()
        self._value: Snapshot | None = None
        self._at = float("-inf")

    def get(self) -> Snapshot:
        with self._lock:  # a reader arriving mid-computation waits for that one
            if self._value is None or time.monotonic() - self._at >= self.max_age_s:
                self._value = self._compute()
                self._at = time.monotonic()
            return self._value

    def _compute(self) -> Snapshot:
        self.computations += 1
        errors: dict[str, BaseException] = {}
        broker: BrokerState | None = None
        rows: WorkRows | None = None
        try:
            broker = self.read_broker()
        except Exception as exc:  # noqa: BLE001 - each reader decides (status fails, metrics report 0)
            errors["broker"] = exc
        try:
            with self.uow_factory() as uow:
                rows = read_rows(uow)
                # Apart from read_rows (whose plans test_periodic_plans checks on the
                # large tables): two counts through event_deliveries' partial indexes,
                # the paused queues, and the analytics refresher's (small) queue.
                rows = replace(rows, event_deliveries=event_repository(uow).undelivered_counts())
                rows = replace(rows, paused_queues=pause_repository(uow).paused())
                rows = replace(rows, analytics_backlog=uow.analytics.refresh_backlog())
            with self.uow_factory() as uow:  # the ledger reads on the driver connection
                rows = replace(rows, **_ledger_today(uow))
        except Exception as exc:  # noqa: BLE001 - as above
            errors["database"] = exc
        failover: dict[str, Any] | None = None
        try:
            failover = self.read_failover()
        except Exception:  # noqa: BLE001 - an unreadable Redis shows in the broker's error
            failover = None
        return Snapshot(broker, rows, time.time(), errors, failover)


def _ledger_today(uow: UnitOfWork) -> dict[str, Any]:
    """Today's paid calls (a range of idx_model_calls_at) and the budget waits (a range
    of idx_visualizations_pending_dispatch: the pending rows due in the future)."""
    ledger = ledger_of(uow)
    return {
        "spend_today": ledger.day_spend(start_of_utc_day(datetime.now(UTC))),
        "budget_waits": ledger.budget_waits(),
    }


_shared: SnapshotCache | None = None
_shared_settings: object = None
_shared_lock = threading.Lock()


def shared() -> SnapshotCache:
    """This process's snapshot, on the process's broker and database (bootstrap); made
    again if the settings were reloaded (another database, another namespace)."""
    global _shared, _shared_settings
    from workers import bootstrap  # the composition root, imported when first used
    from workers.settings import get_settings

    settings = get_settings()
    with _shared_lock:
        if _shared is None or (_shared_settings is not None and _shared_settings is not settings):
            _shared = SnapshotCache(
                _deployment_broker_state,
                bootstrap.unit_of_work,
                max_age_s=settings.metrics_cache_s,
                read_failover=_last_failover,
            )
            _shared_settings = settings
        return _shared


def _deployment_broker_state() -> BrokerState:
    from workers import bootstrap
    from workers.messaging.broker_state import SharedBrokerState
    from workers.settings import get_settings

    settings = get_settings()
    if bootstrap.rabbitmq_url(settings) is not None:
        return bootstrap.broker_state()  # RabbitMQ's counts come from its server: no SCAN
    shared_state = SharedBrokerState(
        bootstrap.redis_client(),
        settings.redis_namespace,
        bootstrap.broker_state,
        max_age_s=settings.metrics_cache_s,
    )
    return shared_state.get()


def _last_failover() -> dict[str, Any] | None:
    """The last Redis Sentinel failover seen and its reconcile (None: none, or one
    server, not Sentinel)."""
    from domain.sentinel_url import is_sentinel_url
    from workers import bootstrap
    from workers.messaging import failover
    from workers.settings import get_settings

    settings = get_settings()
    if not is_sentinel_url(bootstrap.redis_url(settings)):
        return None
    return failover.last(bootstrap.redis_client(), settings.redis_namespace)
