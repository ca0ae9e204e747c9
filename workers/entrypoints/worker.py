"""The module Dramatiq's CLI loads in every worker process (``emotionviz worker`` runs
``python -m dramatiq workers.entrypoints.worker``): the broker and the actors, wired to
the real services by the composition root, with metrics and health reporting."""

from __future__ import annotations

from workers import bootstrap
from workers.entrypoints.actors import declare_actors
from workers.messaging.middleware import WarmUp
from workers.messaging.watchdog import Watchdog
from workers.settings import get_settings

settings = get_settings()
broker = bootstrap.broker()
actors = declare_actors(broker, settings, bootstrap.actor_dependencies())
broker.add_middleware(
    WarmUp(
        bootstrap.visualization_service,
        bootstrap.intake_service,
        bootstrap.warm_pool,
        bootstrap.warm_libraries,
    )
)
broker.add_middleware(Watchdog(settings.watchdog_interval_s))
if settings.metrics_port:
    from workers.observability.middleware import worker_middleware

    for middleware in worker_middleware(settings.metrics_port):
        broker.add_middleware(middleware)
