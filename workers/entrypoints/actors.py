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
from dramatiq.middleware.time_limit import TimeLimitExceeded

from domain.errors import InvalidMessageError, JobTimeLimitError, LeaseHeldError, PermanentError
from domain.ledger import BudgetExceededError
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
from workers.messaging.failure_policy import (
    Count,
    current_own_entry,
    current_retries,
    reject,
    run_classified,
    stored_reason,
)
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
# A message whose person is at USER_MAX_IN_FLIGHT comes back after 1-2 s.
AT_CAP_DELAY_MS = 1000


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
            # A first delivery is a token: it takes the fairest waiting entry (maybe
            # another person's). A retry keeps to its own entry (its count is its own),
            # and so does a deferral of its own entry (OWN_ENTRY: a budget's wait).
            fair = current_retries() == 0 and not current_own_entry()
            try:
                outcome = service.process(
                    message, fair=fair, max_in_flight=settings.user_max_in_flight
                )
                log.info("entry processed", outcome=outcome.value)
                if outcome is Outcome.COMPLETED:
                    metrics.count_visualization_finished("completed")
                elif outcome is Outcome.AT_CAP:
                    delay_ms = int(AT_CAP_DELAY_MS + random.uniform(0, AT_CAP_DELAY_MS))
                    deps.publisher().publish(message, delay_ms=delay_ms)
                    log.info("person at the in-flight cap, deferred", delay_ms=delay_ms)
            except LeaseHeldError as exc:
                turn = service.turn_taken()
                if turn is not None:  # the turn's own job raised it: that entry's failure
                    turn_failed(turn, exc)
                    return
                # Another worker is on it. Look again when its lease would expire; this
                # does not spend a retry (the other worker may simply be slow).
                delay_ms = int((exc.retry_after_s or 30) * 1000 + random.uniform(0, 1000))
                deps.publisher().publish(message, delay_ms=delay_ms)
                log.info("lease held elsewhere, deferred", delay_ms=delay_ms)
            except (Exception, TimeLimitExceeded) as exc:
                turn = service.turn_taken()
                if turn is None:
                    raise
                # The job was another entry's, taken in turn: its failure is that entry's
                # (failed, or retried with its own message), and this message is done.
                turn_failed(turn, exc)

        def turn_failed(turn: EntryCreated, exc: BaseException) -> None:
            if isinstance(exc, TimeLimitExceeded):
                exc = JobTimeLimitError(settings.job_time_limit_s)
            reason = stored_reason(exc)
            if isinstance(exc, BudgetExceededError):
                # Its person's daily budget: a wait, not a failure (as failure_policy's
                # defer for a message's own entry). No retry spent, the row not failed,
                # whatever MAX_RETRIES: its message comes back after the wait, a first
                # delivery again (retries=0; Dramatiq's Retries would give up a deferred
                # retry when MAX_RETRIES=0), that claims this entry, not a token's turn
                # (OWN_ENTRY: the released row is not in the pool).
                delay_ms = int((exc.retry_after_s or 0.0) * 1000)
                entry_created.send_with_options(
                    args=(turn.to_payload(),), delay=delay_ms, own_entry=True
                )
                log.info("entry taken in turn deferred: daily budget reached", reason=reason)
                return
            if isinstance(exc, PermanentError) or settings.max_retries == 0:
                if not isinstance(exc, PermanentError):
                    reason = stored_reason(exc, prefix="gave up after 1 attempts; last error: ")
                if service.mark_failed(turn.entry_id, reason):
                    metrics.count_visualization_finished("failed")
                return
            deps.count("retries")
            retry_after = getattr(exc, "retry_after_s", None)
            delay_ms = (
                int(retry_after * 1000 + random.uniform(0, 250))
                if retry_after is not None
                else int(settings.min_backoff_ms * random.uniform(1.0, 1.5))
            )
            # Its first attempt: the retry is its own message, counted as retry 1.
            entry_created.send_with_options(args=(turn.to_payload(),), delay=delay_ms, retries=1)
            log.warning("entry taken in turn failed, will retry", reason=reason, delay_ms=delay_ms)

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
