"""The paused queues as gauges (issue 24.3), read at scrape time from PostgreSQL's
``paused_queues`` (a handful of rows): ``emotionviz_queue_paused{queue}`` (1 paused,
0 not, for every queue), ``emotionviz_queue_paused_seconds{queue}`` and
``emotionviz_queue_paused_too_long{queue}`` (paused longer than QUEUE_PAUSE_ALERT_S:
the EmotionvizQueuePausedTooLong alert, docs/monitoring/alerts.yml). An unreadable
database leaves them out (emotionviz_collector_up says so) rather than failing the
scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from domain.errors import EmotionVizError
from domain.messages import QUEUES
from workers.logging import get_logger
from workers.settings import get_settings

log = get_logger("emotionviz.metrics")


class PauseCollector(Collector):
    def collect(self) -> Iterator[Any]:
        from datetime import UTC, datetime

        from db.repositories.pauses import pause_repository
        from workers import bootstrap

        try:
            with bootstrap.unit_of_work() as uow:
                rows = pause_repository(uow).paused()
        except EmotionVizError as exc:
            log.warning("metrics: paused queues unreadable", reason=str(exc)[:200])
            return
        limit = get_settings().queue_pause_alert_s
        paused = GaugeMetricFamily(
            "emotionviz_queue_paused",
            "1 when the queue is paused (emotionviz queue pause)",
            labels=["queue"],
        )
        seconds = GaugeMetricFamily(
            "emotionviz_queue_paused_seconds",
            "How long the queue has been paused (0: not)",
            labels=["queue"],
        )
        too_long = GaugeMetricFamily(
            "emotionviz_queue_paused_too_long",
            "1 when the queue has been paused longer than QUEUE_PAUSE_ALERT_S",
            labels=["queue"],
        )
        now = datetime.now(UTC)
        since = {row.name: row.paused_at for row in rows}
        for queue in QUEUES:
            at = since.get(queue)
            paused_s = max(0.0, (now - at).total_seconds()) if at else 0.0
            paused.add_metric([queue], 1.0 if at else 0.0)
            seconds.add_metric([queue], paused_s)
            too_long.add_metric([queue], 1.0 if at and paused_s > limit else 0.0)
        yield paused
        yield seconds
        yield too_long
