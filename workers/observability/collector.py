"""Gauges read at scrape time from Redis and PostgreSQL: what is queued, in flight,
delayed and dead per queue, the age of the oldest ready message, the workers alive,
visualization rows by status and stuck past their lease, intake sessions waiting.

A scrape is cheap: the values are read at most every ``METRICS_CACHE_S`` seconds, with
one Redis pipeline and three indexed queries (no full-table scan: see
``status_counts_estimated``). A source that cannot be read is reported as
``emotionviz_collector_up{source} 0`` rather than failing the scrape.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from db.uow import UnitOfWork
from workers.logging import get_logger
from workers.messaging.broker_state import BrokerState

log = get_logger("emotionviz.metrics")


@dataclass
class Snapshot:
    broker: BrokerState | None = None
    rows: dict[str, int] = field(default_factory=dict)
    stuck: int | None = None
    intake: dict[str, int] = field(default_factory=dict)
    up: dict[str, bool] = field(default_factory=dict)


class StateCollector(Collector):
    def __init__(
        self,
        read_broker: Callable[[], BrokerState],
        uow_factory: Callable[[], UnitOfWork],
        *,
        cache_s: float,
    ) -> None:
        self.read_broker = read_broker
        self.uow_factory = uow_factory
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._snapshot = Snapshot()
        self._taken_at = float("-inf")

    def snapshot(self) -> Snapshot:
        with self._lock:
            if time.monotonic() - self._taken_at >= self.cache_s:
                self._snapshot = self._read()
                self._taken_at = time.monotonic()
            return self._snapshot

    def _read(self) -> Snapshot:
        snap = Snapshot()
        try:
            snap.broker = self.read_broker()
            snap.up["broker"] = True
        except Exception as exc:  # noqa: BLE001 - reported as a gauge and a log line
            snap.up["broker"] = False
            log.warning("metrics: broker unreadable", reason=f"{type(exc).__name__}: {exc}")
        try:
            with self.uow_factory() as uow:
                snap.rows = uow.visualizations.status_counts_estimated()
                snap.stuck = uow.visualizations.stuck_count()
                snap.intake = uow.intake.open_state_counts()
            snap.up["database"] = True
        except Exception as exc:  # noqa: BLE001 - reported as a gauge and a log line
            snap.up["database"] = False
            log.warning("metrics: database unreadable", reason=f"{type(exc).__name__}: {exc}")
        return snap

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot()
        up = GaugeMetricFamily(
            "emotionviz_collector_up", "1 when the source could be read", labels=["source"]
        )
        for source, ok in snap.up.items():
            up.add_metric([source], 1.0 if ok else 0.0)
        yield up
        if snap.broker is not None:
            yield from _broker_metrics(snap.broker)
        if snap.up.get("database"):
            rows = GaugeMetricFamily(
                "emotionviz_visualizations",
                "Visualization rows by status (completed is the planner's estimate)",
                labels=["status"],
            )
            for status, number in sorted(snap.rows.items()):
                rows.add_metric([status], number)
            yield rows
            yield GaugeMetricFamily(
                "emotionviz_visualizations_stuck",
                "Rows processing past their lease (a dead or hung worker)",
                value=snap.stuck or 0,
            )
            intake = GaugeMetricFamily(
                "emotionviz_intake_sessions_open",
                "Open intake sessions by state (waiting_for_person, waiting_for_worker, failed)",
                labels=["state"],
            )
            for state, number in sorted(snap.intake.items()):
                intake.add_metric([state], number)
            yield intake


def _broker_metrics(broker: BrokerState) -> Iterator[Any]:
    messages = GaugeMetricFamily(
        "emotionviz_queue_messages",
        "Messages per queue by state: ready, delayed, in_flight, retrying (of delayed), dead",
        labels=["queue", "state"],
    )
    oldest = GaugeMetricFamily(
        "emotionviz_queue_oldest_message_age_seconds",
        "Age of the oldest message waiting in the ready queue (0 when empty)",
        labels=["queue"],
    )
    for name, queue in broker.queues.items():
        for state in ("ready", "delayed", "in_flight", "retrying", "dead"):
            if state not in broker.not_measured:  # absent, not 0: an alert must not read it
                messages.add_metric([name, state], getattr(queue, state))
        if "oldest_age_s" not in broker.not_measured:
            oldest.add_metric([name], queue.oldest_age_s or 0.0)
    yield messages
    yield oldest
    if "workers" in broker.not_measured:
        return
    yield GaugeMetricFamily(
        "emotionviz_workers_alive",
        "Worker processes whose heartbeat is fresh (all machines on this broker)",
        value=len(broker.workers),
    )
