"""The composition root: the one place that turns settings into live parts.

Explicit URLs win, else the embedded services start. Each part is built once per
process on first use (``lru_cache``): settings, logging and secret registration, the
broker, the database engine, the providers and the application services. Nothing else
in the product looks a dependency up; services receive theirs from here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from db import embedded
from domain.messages import QUEUES, EntryCreated, MessageV1
from workers.logging import configure_logging, register_secret
from workers.settings import Settings, get_settings, webhook_secrets

# Each part's module is imported where the part is built: a command pays only for what
# it uses (``status`` reads Redis and the database; it never loads the broker, the
# providers or the services, nor Pillow, the model SDK or Dramatiq's worker).
if TYPE_CHECKING:
    import dramatiq
    import redis

    from db.engine import Database
    from db.uow import UnitOfWork
    from domain.providers import ImageStore
    from workers.entrypoints.actors import ActorDependencies
    from workers.messaging.broker_state import BrokerState
    from workers.messaging.counters import Counters
    from workers.messaging.producer import Producer
    from workers.providers.factory import Providers
    from workers.services.intake import IntakeService
    from workers.services.ledger import PaidCallLedger
    from workers.services.media import MediaLifecycle
    from workers.services.reconcile import ReconcileReport
    from workers.services.visualize import VisualizationService


def redact_url(url: str) -> str:
    """The URL without its password, for logs (db/engine.py's)."""
    from db.engine import redact_url as redact

    return redact(url)


# --- settings and logging -------------------------------------------------------------


def configure_process(settings: Settings | None = None) -> Settings:
    """Register every secret for scrubbing, then configure logging. Called once by each
    entry point (CLI, worker boot) before anything is logged."""
    settings = settings or get_settings()
    for secret in (
        settings.gemini_api_key,
        settings.database_url,
        settings.database_direct_url,
        settings.redis_url,
        settings.broker_url,
        settings.console_token,
        settings.aws_secret_access_key,
        settings.aws_session_token,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())
    for value in webhook_secrets(settings):  # completion events' webhook
        register_secret(value)
    pseudonym_key = settings.log_pseudonym_key  # registered as a secret by configure_logging
    configure_logging(
        settings.log_level,
        settings.log_format,
        settings.log_max_line_bytes,
        pseudonym_key.get_secret_value() if pseudonym_key is not None else "",
    )
    from db.engine import use_pooler

    # Every connection the process opens (pool, health checks, LISTEN) follows it.
    use_pooler(settings.database_pooler == "pgbouncer")
    return settings


# --- services: explicit URLs, else embedded -------------------------------------------


def database_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    return embedded.start_postgres(settings.data_dir)


def redis_url(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    return embedded.start_redis(settings.data_dir)


# --- database ------------------------------------------------------------------------


def database_direct_url(settings: Settings | None = None) -> str:
    """The URL for what needs a session of its own (migrations, LISTEN, backup and
    restore): DATABASE_DIRECT_URL, else DATABASE_URL (no pooler in between)."""
    settings = settings or get_settings()
    if settings.database_direct_url is not None:
        return settings.database_direct_url.get_secret_value()
    return database_url(settings)


def database_pool(settings: Settings) -> tuple[int, int]:
    """(pool size, max overflow) of a process's engine: sized to WORKER_THREADS unless
    DB_POOL_SIZE / DB_MAX_OVERFLOW say otherwise (docs/operations.md, the budget)."""
    from db.engine import pool_for_threads

    return pool_for_threads(
        settings.worker_threads, settings.db_pool_size, settings.db_max_overflow
    )


@lru_cache(maxsize=1)
def database() -> Database:
    settings = get_settings()
    from db.engine import use_pooler

    use_pooler(settings.database_pooler == "pgbouncer")  # before the first connection
    from db.engine import Database

    size, overflow = database_pool(settings)
    return Database(database_url(settings), pool_size=size, max_overflow=overflow)


def warm_pool() -> None:
    """Open the pool's connections now (a worker at boot), so the first burst of
    messages does not wait for new connections: the pool's size (sized to the
    threads), which it keeps open at rest anyway; overflow opens only under load."""
    database().warm_pool()


def warm_libraries() -> None:
    """Build what our libraries build lazily (the model SDK's response models, Pillow's
    plugins and WebP encoder, the metrics) now, a worker at boot: each process's first
    entry paid ~130 ms for them."""
    from workers.observability import metrics
    from workers.providers.gemini import warm_up_sdk
    from workers.services import imaging

    metrics.warm_up()
    imaging.warm_up()
    if get_settings().resolved_provider() == "gemini":
        warm_up_sdk()


def unit_of_work() -> UnitOfWork:
    return database().unit_of_work(_LazyPublisher())


class _LazyPublisher:
    """The producer, built when a unit of work first publishes: a command that only
    reads or writes the database (migrate, seed, an inline recompute) never connects to
    the broker, nor starts the embedded Redis."""

    def publish(self, message: MessageV1, *, delay_ms: int | None = None) -> str:
        return producer().publish(message, delay_ms=delay_ms)

    def publish_many(self, messages: Sequence[MessageV1]) -> list[str]:
        return producer().publish_many(messages)


# --- messaging -----------------------------------------------------------------------


@lru_cache(maxsize=1)
def broker() -> dramatiq.Broker:
    from workers.messaging.broker import build_broker

    settings = configure_process()
    return build_broker(settings, redis_url(settings))


@lru_cache(maxsize=1)
def producer() -> Producer:
    from workers.messaging.producer import Producer

    return Producer(broker())


@lru_cache(maxsize=1)
def redis_client() -> redis.Redis:
    """The process's client for our own Redis reads and writes (rate gates, counters,
    status, dead letters), on a blocking pool of REDIS_MAX_CONNECTIONS."""
    from workers.messaging.redis_clients import pooled_client

    settings = get_settings()
    return pooled_client(redis_url(settings), settings.redis_max_connections)


def rabbitmq_url(settings: Settings | None = None) -> str | None:
    """BROKER_URL when it selects RabbitMQ, else None (the broker is Redis)."""
    settings = settings or get_settings()
    url = settings.broker_url.get_secret_value() if settings.broker_url else None
    return url if url and url.startswith("amqp") else None


def broker_state(queues: tuple[str, ...] = QUEUES) -> BrokerState:
    """What the broker holds now, read from whichever broker BROKER_URL selects."""
    settings = get_settings()
    amqp = rabbitmq_url(settings)
    if amqp is not None:
        from workers.messaging.rabbitmq_state import read_rabbitmq_state  # the rabbitmq extra

        return read_rabbitmq_state(amqp, queues)
    from workers.messaging.broker_state import read_broker_state

    return read_broker_state(redis_client(), settings.redis_namespace, queues)


@lru_cache(maxsize=1)
def counters() -> Counters:
    from workers.messaging.counters import Counters

    return Counters(redis_client(), get_settings().redis_namespace)


# --- providers and application services ----------------------------------------------


@lru_cache(maxsize=1)
def providers() -> Providers:
    from workers.providers.factory import build_providers

    settings = get_settings()
    return build_providers(settings, redis_client(), ledger=paid_call_ledger())


@lru_cache(maxsize=1)
def paid_call_ledger() -> PaidCallLedger:
    """The paid-call ledger and daily budget the providers record to (issue 23.3)."""
    from workers.services.ledger import PaidCallLedger

    settings = get_settings()
    return PaidCallLedger(
        unit_of_work,
        settings.prices(),
        settings.user_daily_budget_usd,
        cache_s=settings.budget_cache_s,
    )


@lru_cache(maxsize=1)
def image_store() -> ImageStore:
    """The media store alone (the console serves its images; needs no provider)."""
    from workers.providers.storage import image_store as build_image_store

    return build_image_store(get_settings())


def picture(url: str) -> tuple[bytes, str] | None:
    """A row's picture read through the store (a folder, or the fleet's bucket)."""
    from workers.providers import storage

    return storage.picture(image_store(), url)


def check_media_store(settings: Settings, timeout_s: float) -> tuple[bool, str] | None:
    """Readiness of the object store; None where pictures are in a local folder."""
    from workers.providers import storage

    return storage.check_store(settings, timeout_s)


@lru_cache(maxsize=1)
def visualization_service() -> VisualizationService:
    from workers.services.visualize import VisualizationService, VisualizeLimits

    settings = get_settings()
    return VisualizationService(
        unit_of_work,
        providers(),
        VisualizeLimits(
            lease_s=settings.lease_s,
            max_claims=settings.max_claims,
            thumbnail_px=settings.thumbnail_px,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        ),
        ledger=paid_call_ledger(),
    )


@lru_cache(maxsize=1)
def media_lifecycle() -> MediaLifecycle:
    from workers.services.media import MediaLifecycle

    return MediaLifecycle(unit_of_work, providers().store)


@lru_cache(maxsize=1)
def intake_service() -> IntakeService:
    from workers.services.intake import IntakeService

    return IntakeService(
        unit_of_work,
        providers().intake,
        max_steps=get_settings().intake_max_steps,
    )


# Queued (person, day) refreshes one maintenance pass does at most (the rest next pass).
MAINTENANCE_REFRESH_LIMIT = 2000


def rabbitmq_queued_since(url: str, queue: str) -> float:
    """RabbitMQ shows how many messages wait, not when the first was sent: while any
    waits, the reconciler resends no pending row (it cannot tell which are queued);
    once the queue has drained, the grace window alone decides."""
    from workers.messaging.rabbitmq_state import read_rabbitmq_state  # the rabbitmq extra

    waiting = read_rabbitmq_state(url, (queue,)).queues[queue]
    return 0.0 if waiting.ready else math.inf


def run_reconcile() -> ReconcileReport:
    """One maintenance pass with this deployment's broker (the actor and the CLI):
    reconcile lost or stuck work, then the analytics of edited or deleted entries."""
    from workers.messaging.broker_state import broker_lost_data
    from workers.messaging.queue_head import holds_messages, queue_head_sent_at
    from workers.services.reconcile import reconcile

    settings = get_settings()
    namespace = settings.redis_namespace
    queue = EntryCreated.queue_name
    amqp = rabbitmq_url(settings)
    if amqp is None:
        queued_since = lambda: queue_head_sent_at(redis_client(), namespace, queue)  # noqa: E731
    else:
        queued_since = lambda: rabbitmq_queued_since(amqp, queue)  # noqa: E731

    def lost() -> bool:
        # The marker is also missing on a deployment's very first reconcile: a broker
        # that still holds messages has not lost them (the first pass would otherwise
        # republish a whole backlog the producers had just sent).
        if not broker_lost_data(redis_client(), namespace):
            return False
        return rabbitmq_url(settings) is None and not holds_messages(
            redis_client(), namespace, queue
        )

    report = reconcile(
        unit_of_work,
        grace_s=settings.reconcile_grace_s,
        broker_lost_data=lost,
        queued_since=queued_since,
    )
    # Analytics of entries upstream edited or deleted (queued by triggers) follow in the
    # same periodic pass, bounded like the rest of it.
    refreshed = drain_analytics_refreshes(MAINTENANCE_REFRESH_LIMIT)
    return dataclasses.replace(report, analytics_refreshed=refreshed)


def drain_analytics_refreshes(limit: int) -> int:
    """Refresh up to ``limit`` queued analytics refreshes: a pass of the worker's
    refresher (workers/entrypoints/analytics_refresh.py) or of the maintenance pass."""
    from workers.services.analytics import drain_analytics_refresh_queue

    return drain_analytics_refresh_queue(unit_of_work, limit=limit)


def actor_dependencies() -> ActorDependencies:
    """The real services behind the actors (workers/entrypoints/worker.py)."""
    from workers.entrypoints.actors import ActorDependencies
    from workers.services.analytics import recompute

    return ActorDependencies(
        visualization=visualization_service,
        intake=intake_service,
        recompute=lambda message: recompute(unit_of_work, message),
        reconcile=run_reconcile,
        collect_media_garbage=lambda: media_lifecycle().collect_garbage(),
        publisher=producer,
        count=lambda name: counters().incr(name),
    )


# --- Redis Sentinel (issue 22.1) -----------------------------------------------------


def run_failover_reconcile(seen_at: float) -> ReconcileReport:
    """The reconcile a Redis failover calls for (workers/entrypoints/failover_watch.py):
    pending rows dispatched within REDIS_FAILOVER_LOOKBACK_S before ``seen_at`` (Unix
    time) are published again; ``skipped`` while another reconcile holds the lock."""
    from datetime import UTC, datetime

    from workers.services.reconcile import reconcile_after_failover

    return reconcile_after_failover(
        unit_of_work,
        seen_at=datetime.fromtimestamp(seen_at, UTC),
        lookback_s=get_settings().redis_failover_lookback_s,
    )
