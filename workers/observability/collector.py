"""Gauges read at scrape time from the shared snapshot (workers/observability/snapshot.py,
the one ``status`` and the console read too): what is queued, in flight, delayed and
dead per queue, the age of the oldest ready message, the workers alive, open
visualization rows by status, rows finished in the last hour, rows stuck past their
lease, intake sessions waiting.

A scrape is cheap: the snapshot is computed at most every few seconds per process, its
database reads are index-driven (docs/benchmarks.md), and the broker's part is read by
one collector per deployment (no keyspace SCAN on every machine). Every number is
exact: completed work is the rows completed in the last hour, never the planner's
estimate of a table. A source that cannot be read is reported as
``emotionviz_collector_up{source} 0`` rather than failing the scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers.logging import get_logger
from workers.messaging.broker_state import BrokerState
from workers.observability.snapshot import FINISHED_WINDOW_S, Snapshot

log = get_logger("emotionviz.metrics")


class StateCollector(Collector):
    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot()
        up = GaugeMetricFamily(
            "emotionviz_collector_up", "1 when the source could be read", labels=["source"]
        )
        for source, ok in snap.up.items():
            up.add_metric([source], 1.0 if ok else 0.0)
        for source, exc in snap.errors.items():
            log.warning(f"metrics: {source} unreadable", reason=f"{type(exc).__name__}: {exc}")
        yield up
        if snap.broker is not None:
            yield from _broker_metrics(snap.broker)
        if snap.rows is None:
            return
        rows = GaugeMetricFamily(
            "emotionviz_visualizations",
            "Open visualization rows by status (pending, processing, failed), exact",
            labels=["status"],
        )
        for status, number in sorted(snap.rows.open.items()):
            rows.add_metric([status], number)
        yield rows
        finished = GaugeMetricFamily(
            "emotionviz_visualizations_finished_last_hour",
            f"Rows completed or failed in the last {FINISHED_WINDOW_S} s, exact",
            labels=["status"],
        )
        for status, number in sorted(snap.rows.finished_last_hour.items()):
            finished.add_metric([status], number)
        yield finished
        yield GaugeMetricFamily(
            "emotionviz_visualizations_stuck",
            "Rows processing past their lease (a dead or hung worker)",
            value=snap.rows.stuck,
        )
        intake = GaugeMetricFamily(
            "emotionviz_intake_sessions_open",
            "Open intake sessions by state (waiting_for_person, waiting_for_worker, failed)",
            labels=["state"],
        )
        for state, number in sorted(snap.rows.intake.items()):
            intake.add_metric([state], number)
        yield intake
        deliveries = GaugeMetricFamily(
            "emotionviz_event_deliveries",
            "Completion events' deliveries not delivered, by state (pending, dead)",
            labels=["state"],
        )
        for state, number in sorted(snap.rows.event_deliveries.items()):
            deliveries.add_metric([state], number)
        yield deliveries
        backlog = snap.rows.analytics_backlog
        if backlog is not None:
            yield GaugeMetricFamily(
                "emotionviz_analytics_refresh_queued",
                "Analytics refreshes waiting (completed, edited or deleted entries' person "
                "and day), exact up to 100,000",
                value=backlog.queued,
            )
            yield GaugeMetricFamily(
                "emotionviz_analytics_refresh_oldest_age_seconds",
                "Age of the oldest waiting analytics refresh (0 when none): the worker "
                "processes' refreshers drain it every second, so minutes mean none runs",
                value=backlog.oldest_age_s or 0.0,
            )


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
