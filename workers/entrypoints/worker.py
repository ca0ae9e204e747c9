"""The module Dramatiq's CLI loads in every worker process (``emotionviz worker`` runs
``python -m dramatiq workers.entrypoints.worker``): the broker and the actors, wired to
the real services by the composition root, with metrics and health reporting."""

from __future__ import annotations

import sys

from domain.errors import ConfigurationError
from workers import bootstrap
from workers.entrypoints.actors import declare_actors
from workers.entrypoints.analytics_refresh import AnalyticsRefresher
from workers.entrypoints.cpu_affinity import CpuAffinity
from workers.entrypoints.event_delivery import EventDelivery
from workers.entrypoints.failover_watch import FailoverWatchMiddleware
from workers.messaging.broker import declare_queues_now, watch_pauses
from workers.messaging.middleware import WarmUp
from workers.messaging.watchdog import Watchdog
from workers.operations.pauses import SYNC_EVERY_S, mirrored, restore_mirror, sync_mirror
from workers.providers.factory import announce_choice, choose_providers
from workers.settings import get_settings

settings = get_settings()
try:
    provider_choice = choose_providers(settings)
except ConfigurationError as exc:
    # A worker that can only fail every job must not start (it used to, with a warning
    # per warm-up step): exit 2, Dramatiq's code for a module that cannot load, which
    # its CLI passes on after stopping the other processes.
    sys.stderr.write(f"emotionviz worker: {exc}\n")
    sys.stderr.flush()
    raise SystemExit(2) from None
broker = bootstrap.broker()
# Paused queues (emotionviz queue pause), and their Redis mirror kept to PostgreSQL.
watch_pauses(broker, restore_mirror, mirrored, sync_mirror, SYNC_EVERY_S)
actors = declare_actors(broker, settings, bootstrap.actor_dependencies())
try:
    declare_queues_now(broker)  # RabbitMQ: a queue of the other type stops us here
except ConfigurationError as exc:
    sys.stderr.write(f"emotionviz worker: {exc}\n")
    sys.stderr.flush()
    raise SystemExit(2) from None
# Before the warm-up and the threads: every thread the process starts shares its CPUs.
broker.add_middleware(CpuAffinity(settings.worker_cpu_affinity, settings.worker_processes))
broker.add_middleware(
    WarmUp(
        bootstrap.visualization_service,
        bootstrap.intake_service,
        bootstrap.warm_pool,
        bootstrap.warm_libraries,
    )
)
broker.add_middleware(Watchdog(settings.watchdog_interval_s))
broker.add_middleware(EventDelivery(settings))  # completion events to their subscribers
# The analytics of completed, edited and deleted entries, a second later in batches.
broker.add_middleware(
    AnalyticsRefresher(settings.analytics_refresh_every_s, bootstrap.drain_analytics_refreshes)
)
broker.add_middleware(FailoverWatchMiddleware(settings))  # REDIS_URL=redis+sentinel://
if settings.metrics_port:
    from workers.observability.middleware import worker_middleware

    for middleware in worker_middleware(settings.metrics_port):
        broker.add_middleware(middleware)
# After the metrics middleware chose the multiprocess directory: the gauge lands there.
announce_choice(provider_choice)
