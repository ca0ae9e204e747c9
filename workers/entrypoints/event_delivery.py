"""The completion events' dispatcher in every worker process: a Dramatiq middleware
that starts one thread at worker boot and stops it at shutdown
(workers/services/events.py says what a pass does; docs/messages.md, "Completion
events", what subscribers receive).

A process with no subscriber configured (neither EVENTS_QUEUE nor EVENTS_WEBHOOK_URL)
opens no LISTEN connection; its thread only deletes events past EVENTS_RETENTION_DAYS.
EVENTS_DISPATCH=false starts no thread at all.
"""

from __future__ import annotations

import threading
from typing import Any

from dramatiq.middleware import Middleware

from db.event_listener import CompletionWakeUps
from workers import bootstrap
from workers.logging import get_logger, register_secret
from workers.providers.event_sinks import EventSink, QueueSink, WebhookSink
from workers.services.events import DeliveryPolicy, EventDispatcher
from workers.settings import Settings, webhook_key, webhook_secrets

log = get_logger("emotionviz.events")

# After the thread was asked to stop, how long shutdown waits for it: its idle wait
# looks at the stop event every 0.25 s and a pass sends no further claim once asked (it
# gives them back), so only a delivery in flight can outlast this; a delivery cut short
# is claimed again when its lease passes.
JOIN_S = 2.0


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        max_attempts=settings.events_max_attempts,
        min_backoff_s=settings.events_min_backoff_ms / 1000,
        max_backoff_s=settings.events_max_backoff_ms / 1000,
        # One delivery's longest time: a webhook's timeout, for connect and for answer.
        # A pass sends its claims only while the lease has room for one more of those;
        # the rest it gives back (workers/services/events.py).
        per_delivery_s=2 * settings.events_webhook_timeout_s,
        lease_s=2 * settings.events_webhook_timeout_s + 30,
        batch=settings.events_batch,
        poll_s=settings.events_poll_s,
        retention_s=settings.events_retention_days * 86400,
    )


def event_sinks(settings: Settings) -> list[EventSink]:
    sinks: list[EventSink] = []
    if settings.events_queue:
        sinks.append(
            QueueSink(bootstrap.broker(), settings.events_queue, settings.events_queue_actor)
        )
    if settings.events_webhook_url and settings.events_webhook_secret:
        secret = settings.events_webhook_secret.get_secret_value()
        for value in webhook_secrets(settings):  # never in a log line
            register_secret(value)
        sinks.append(
            WebhookSink(
                settings.events_webhook_url, webhook_key(secret), settings.events_webhook_timeout_s
            )
        )
    return sinks


def build_dispatcher(settings: Settings) -> EventDispatcher:
    sinks = event_sinks(settings)
    wake_ups = CompletionWakeUps(bootstrap.database_direct_url(settings)) if sinks else None
    return EventDispatcher(bootstrap.unit_of_work, sinks, delivery_policy(settings), wake_ups)


class EventDelivery(Middleware):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.dispatcher: EventDispatcher | None = None

    def after_worker_boot(self, broker: Any, worker: Any) -> None:
        if not self.settings.events_dispatch:
            return
        self.dispatcher = build_dispatcher(self.settings)
        self.thread = threading.Thread(
            target=self.dispatcher.run, args=(self.stop,), name="event-delivery", daemon=True
        )
        self.thread.start()
        log.info("event delivery started", subscribers=self.dispatcher.subscribers)

    def before_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(JOIN_S)
            if self.thread.is_alive():  # a delivery in flight; it closes when it ends
                log.warning("event delivery still sending at shutdown", waited_s=JOIN_S)
                return
        if self.dispatcher is not None:
            self.dispatcher.close()  # run() closed it already; closing twice is harmless
