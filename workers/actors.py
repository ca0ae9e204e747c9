"""Thin actors: validate the message, call one application service, classify failures.

Import this module to register the actors; it builds the broker first. Worker
processes load it with ``emotionviz worker`` (Dramatiq's CLI underneath).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, TypeVar

import dramatiq
from dramatiq.middleware import CurrentMessage

from domain.errors import (
    InvalidMessageError,
    LeaseHeldError,
    NotFoundError,
    OwnershipError,
    PermanentError,
    TransientError,
)
from domain.messages import (
    AnalyticsRecompute,
    EntryCreated,
    IntakeStep,
    MessageV1,
    parse_message,
)
from workers import app, runtime, stats
from workers.logging import get_logger
from workers.middleware import WarmUp
from workers.settings import get_settings

broker = app.broker()
settings = get_settings()
log = get_logger("emotionviz.actors")
broker.add_middleware(WarmUp(app.visualization_service, app.intake_service, runtime.warm_pool))

# Errors that mean "this message is wrong": dead-letter it, change no row.
REJECTED = (InvalidMessageError, NotFoundError, OwnershipError)
M = TypeVar("M", bound=MessageV1)


def _payload(model: type[MessageV1], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The body is one JSON object, as args[0] (our producer) or as kwargs (tolerated)."""
    if len(args) == 1 and not kwargs:
        return args[0]
    if not args and kwargs:
        return kwargs
    raise InvalidMessageError(
        f"{model.actor_name} expects one JSON object argument, got {len(args)} args "
        f"and {len(kwargs)} kwargs"
    )


def _parse(model: type[M], args: tuple[Any, ...], kwargs: dict[str, Any]) -> M:
    try:
        return parse_message(model, _payload(model, args, kwargs))
    except InvalidMessageError as exc:
        _rejected(exc)
        raise


def _rejected(exc: Exception) -> None:
    log.error("message rejected", reason=str(exc))
    stats.incr("rejected")


def _run_classified(
    work: Callable[[], None], *, fail: Callable[[str], None], max_retries: int
) -> None:
    """Run one message's work and classify what it raises. A wrong message is rejected
    (dead-lettered, no row changed); a permanent error calls ``fail`` with the reason
    and dead-letters; anything else is retried (waiting a server-given delay, plus
    jitter, when there is one) and, past ``max_retries``, fails the same way."""
    try:
        work()
    except REJECTED as exc:
        _rejected(exc)
        raise
    except PermanentError as exc:
        fail(str(exc))
        raise
    except Exception as exc:  # every error is retried, or given up on
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message else 0
        if retries >= max_retries:
            reason = f"gave up after {retries + 1} attempts; last error: {exc}"
            fail(reason)
            raise PermanentError(reason) from exc
        stats.incr("retries")
        if not isinstance(exc, TransientError):
            log.exception("unexpected error, will retry")
            raise
        log.warning(
            "transient failure, will retry", reason=str(exc), retry_after_s=exc.retry_after_s
        )
        if exc.retry_after_s is None:
            raise  # Dramatiq's exponential backoff applies
        delay_ms = int(exc.retry_after_s * 1000 + random.uniform(0, 250))
        raise dramatiq.Retry(str(exc), delay=delay_ms) from exc


# Lower numbers run first among the messages a worker has fetched: a person waiting
# for an intake question goes before an image. (The real isolation is a worker of its
# own on the intake queue: docker-compose.yml.)
PRIORITY_INTAKE, PRIORITY_ENTRY, PRIORITY_ANALYTICS = 0, 10, 20


@dramatiq.actor(
    actor_name=EntryCreated.actor_name,
    queue_name=EntryCreated.queue_name,
    priority=PRIORITY_ENTRY,
    throws=(PermanentError,),
    max_retries=settings.max_retries,
)
def entry_created(*args: Any, **kwargs: Any) -> None:
    message = _parse(EntryCreated, args, kwargs)
    service = app.visualization_service()

    def work() -> None:
        try:
            outcome = service.process(message)
            log.info("entry processed", outcome=outcome.value)
        except LeaseHeldError as exc:
            # Another worker is on it. Look again when its lease would expire; this
            # does not spend a retry (the other worker may simply be slow).
            delay_ms = int((exc.retry_after_s or 30) * 1000 + random.uniform(0, 1000))
            entry_created.send_with_options(args=(message.to_payload(),), delay=delay_ms)
            log.info("lease held elsewhere, deferred", delay_ms=delay_ms)

    _run_classified(
        work,
        fail=lambda reason: service.mark_failed(message.entry_id, reason),
        max_retries=settings.max_retries,
    )


@dramatiq.actor(
    actor_name=IntakeStep.actor_name,
    queue_name=IntakeStep.queue_name,
    priority=PRIORITY_INTAKE,
    throws=(PermanentError,),
    max_retries=settings.intake_max_retries,
    min_backoff=settings.intake_min_backoff_ms,
    max_backoff=settings.intake_max_backoff_ms,
)
def intake_step(*args: Any, **kwargs: Any) -> None:
    message = _parse(IntakeStep, args, kwargs)
    service = app.intake_service()

    def work() -> None:
        result = service.process(message)
        log.info("intake step processed", outcome=result.outcome.value, step=message.step)

    def fail(reason: str) -> None:
        # Keep the reason with the session, which stays answerable (an operator can
        # replay the step).
        log.error("intake step failed", reason=reason)
        service.record_failure(message, reason)

    _run_classified(work, fail=fail, max_retries=settings.intake_max_retries)


@dramatiq.actor(
    actor_name=AnalyticsRecompute.actor_name,
    queue_name=AnalyticsRecompute.queue_name,
    priority=PRIORITY_ANALYTICS,
    throws=(PermanentError,),
    max_retries=settings.max_retries,
)
def analytics_recompute(*args: Any, **kwargs: Any) -> None:
    from workers.services.analytics import recompute

    message = _parse(AnalyticsRecompute, args, kwargs)
    summary = recompute(message)
    log.info("analytics recomputed", **summary.as_log())


@dramatiq.actor(actor_name="maintenance.reconcile", queue_name="maintenance", max_retries=3)
def reconcile() -> None:
    from workers.services.reconcile import reconcile as run_reconcile

    report = run_reconcile()
    log.info("reconciled", **report.as_log())
