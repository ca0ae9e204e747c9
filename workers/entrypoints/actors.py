"""Thin actors: validate the message, call one application service, classify failures.

``declare_actors(broker, settings, deps)`` declares one actor per message contract
(domain/messages.py) on the broker it is given. Importing this module builds nothing
and opens no connection: the worker process (workers/entrypoints/worker.py) passes the
real broker and services from the composition root, unit tests a StubBroker and fakes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dramatiq

from domain.errors import InvalidMessageError, LeaseHeldError, PermanentError
from domain.messages import (
    AnalyticsRecompute,
    EntryCreated,
    IntakeStep,
    MaintenanceReconcile,
    MessageV1,
    Publisher,
    parse_message,
)
from workers.logging import get_logger
from workers.messaging.failure_policy import Count, reject, run_classified
from workers.observability import metrics
from workers.services.analytics import RecomputeSummary
from workers.services.intake import IntakeService
from workers.services.reconcile import ReconcileReport
from workers.services.visualize import Outcome, VisualizationService
from workers.settings import Settings

log = get_logger("emotionviz.actors")
M = TypeVar("M", bound=MessageV1)

# Lower numbers run first among the messages a worker has fetched: a person waiting
# for an intake question goes before an image. (The real isolation is a worker of its
# own on the intake queue: docker-compose.yml.) Maintenance (a short, bounded reconcile
# pass) goes before images: behind a backlog it never got a thread, so lost work and
# dead leases waited as long as the backlog did.
PRIORITY_INTAKE, PRIORITY_MAINTENANCE, PRIORITY_ENTRY, PRIORITY_ANALYTICS = 0, 5, 10, 20


@dataclass(frozen=True)
class ActorDependencies:
    """What the actors call. Each is a zero-argument builder (or a function) so that a
    service is built once per process, by the composition root, on first use."""

    visualization: Callable[[], VisualizationService]
    intake: Callable[[], IntakeService]
    recompute: Callable[[AnalyticsRecompute], RecomputeSummary]
    reconcile: Callable[[], ReconcileReport]
    collect_media_garbage: Callable[[], tuple[int, int]]
    publisher: Callable[[], Publisher]
    count: Count


@dataclass(frozen=True)
class Actors:
    entry_created: dramatiq.Actor[..., None]
    intake_step: dramatiq.Actor[..., None]
    analytics_recompute: dramatiq.Actor[..., None]
    reconcile: dramatiq.Actor[..., None]


def _payload(model: type[MessageV1], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The body is one JSON object, as args[0] (our producer) or as kwargs (tolerated).
    A message with no arguments at all is an empty body (reconcile's first shape)."""
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args:
        return kwargs
    raise InvalidMessageError(
        f"{model.actor_name} expects one JSON object argument, got {len(args)} args "
        f"and {len(kwargs)} kwargs"
    )


def declare_actors(broker: dramatiq.Broker, settings: Settings, deps: ActorDependencies) -> Actors:
    def parse(model: type[M], args: tuple[Any, ...], kwargs: dict[str, Any]) -> M:
        try:
            return parse_message(model, _payload(model, args, kwargs))
        except InvalidMessageError as exc:
            reject(exc, deps.count)
            raise

    def declare(
        model: type[MessageV1], priority: int, **options: Any
    ) -> Callable[[Callable[..., None]], dramatiq.Actor[..., None]]:
        return dramatiq.actor(
            actor_name=model.actor_name,
            queue_name=model.queue_name,
            priority=priority,
            broker=broker,
            throws=(PermanentError,),
            **options,
        )

    @declare(EntryCreated, PRIORITY_ENTRY, max_retries=settings.max_retries)
    def entry_created(*args: Any, **kwargs: Any) -> None:
        message = parse(EntryCreated, args, kwargs)
        service = deps.visualization()

        def work() -> None:
            try:
                outcome = service.process(message)
                log.info("entry processed", outcome=outcome.value)
                if outcome is Outcome.COMPLETED:
                    metrics.count_visualization_finished("completed")
            except LeaseHeldError as exc:
                # Another worker is on it. Look again when its lease would expire; this
                # does not spend a retry (the other worker may simply be slow).
                delay_ms = int((exc.retry_after_s or 30) * 1000 + random.uniform(0, 1000))
                deps.publisher().publish(message, delay_ms=delay_ms)
                log.info("lease held elsewhere, deferred", delay_ms=delay_ms)

        def fail(reason: str) -> None:
            if service.mark_failed(message.entry_id, reason):
                metrics.count_visualization_finished("failed")

        run_classified(
            work,
            fail=fail,
            max_retries=settings.max_retries,
            count=deps.count,
            time_limit_s=settings.job_time_limit_s,
        )

    @declare(
        IntakeStep,
        PRIORITY_INTAKE,
        max_retries=settings.intake_max_retries,
        min_backoff=settings.intake_min_backoff_ms,
        max_backoff=settings.intake_max_backoff_ms,
    )
    def intake_step(*args: Any, **kwargs: Any) -> None:
        message = parse(IntakeStep, args, kwargs)
        service = deps.intake()

        def work() -> None:
            result = service.process(message)
            log.info("intake step processed", outcome=result.outcome.value, step=message.step)

        def fail(reason: str) -> None:
            # Keep the reason with the session, which stays answerable (an operator can
            # replay the step).
            log.error("intake step failed", reason=reason)
            service.record_failure(message, reason)

        run_classified(
            work,
            fail=fail,
            max_retries=settings.intake_max_retries,
            count=deps.count,
            time_limit_s=settings.job_time_limit_s,
        )

    @declare(AnalyticsRecompute, PRIORITY_ANALYTICS, max_retries=settings.max_retries)
    def analytics_recompute(*args: Any, **kwargs: Any) -> None:
        message = parse(AnalyticsRecompute, args, kwargs)
        summary = deps.recompute(message)
        log.info("analytics recomputed", **summary.as_log())

    @declare(MaintenanceReconcile, PRIORITY_MAINTENANCE, max_retries=3)
    def reconcile(*args: Any, **kwargs: Any) -> None:
        parse(MaintenanceReconcile, args, kwargs)
        report = deps.reconcile()
        deps.collect_media_garbage()  # a person who left leaves nothing on disk
        for kind, number in report.as_log().items():
            metrics.count_reconciled(kind.removeprefix("republished_"), int(str(number)))
        log.info("reconciled", **report.summary())

    return Actors(entry_created, intake_step, analytics_recompute, reconcile)
