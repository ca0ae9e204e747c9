"""Delivering completion events: the outbox the database's triggers fill (migration
0006) to the subscribers configured by EVENTS_* (workers/providers/event_sinks.py).

One dispatcher thread per worker process (workers/entrypoints/event_delivery.py), woken
by the triggers' own NOTIFY (db/event_listener.py) and, without one, every
EVENTS_POLL_S or when the next retry is due. A pass, in this order:

1. one transaction: give new events to the subscribers (a delivery row each), claim up
   to EVENTS_BATCH due deliveries (FOR UPDATE SKIP LOCKED: dispatchers in other
   processes take other rows) by moving their next attempt past the delivery's time
   limit (a lease), commit;
2. for each claim, outside any transaction: send it (one HTTP request, or one enqueue);
3. record the outcome in a short transaction of its own, if the claim still holds the
   row: delivered; or due again after a backoff; or dead, with the reason, after
   EVENTS_MAX_ATTEMPTS.

A dispatcher that dies between 2 and 3 leaves the row to be claimed again once its
lease passes: at least once, never lost; receivers dedupe on the event id.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from db.repositories.events import ClaimedDelivery, DeliveryRow, event_repository
from db.uow import UnitOfWork
from domain.errors import TransientError
from workers.logging import get_logger
from workers.providers.event_sinks import Event, EventDeliveryError, EventSink

log = get_logger("emotionviz.events")

UowFactory = Callable[[], UnitOfWork]
# How often a dispatcher deletes events older than EVENTS_RETENTION_DAYS.
PURGE_EVERY_S = 600.0
PURGE_BATCH = 5000


class WakeUps(Protocol):
    def wait(self, timeout: float) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 8
    min_backoff_s: float = 1.0
    max_backoff_s: float = 600.0
    lease_s: float = 60.0  # longer than one delivery can take
    batch: int = 100
    poll_s: float = 5.0
    retention_s: float = 7 * 86400.0

    def backoff_s(self, attempts: int) -> float:
        """Before attempt ``attempts + 1``: exponential, half of it jittered."""
        base = min(self.max_backoff_s, self.min_backoff_s * 2.0 ** max(attempts - 1, 0))
        return base / 2 + random.uniform(0, base / 2)


@dataclass
class PassReport:
    fanned_out: int = 0
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    next_due_s: float | None = None  # until the earliest waiting delivery is due


class EventDispatcher:
    def __init__(
        self,
        uow_factory: UowFactory,
        sinks: Sequence[EventSink],
        policy: DeliveryPolicy,
        wake_ups: WakeUps | None = None,
    ) -> None:
        self.uow_factory = uow_factory
        self.sinks = {sink.name: sink for sink in sinks}
        self.policy = policy
        self.wake_ups = wake_ups
        self._next_purge = 0.0

    @property
    def subscribers(self) -> list[str]:
        return sorted(self.sinks)

    def run_pass(self) -> PassReport:
        report = PassReport()
        names = self.subscribers
        with self.uow_factory() as uow:
            repo = event_repository(uow)
            report.fanned_out = repo.fan_out(names, self.policy.batch)
            claims = repo.claim(names, self.policy.batch, self.policy.lease_s)
            uow.commit()
        report.claimed = len(claims)
        for claim in claims:
            self._deliver(claim, report)
        if report.claimed < self.policy.batch:
            with self.uow_factory() as uow:
                report.next_due_s = event_repository(uow).seconds_to_next_due(names)
        return report

    def _deliver(self, claim: ClaimedDelivery, report: PassReport) -> None:
        event = Event(claim.event_id, claim.kind, claim.created_at, claim.payload)
        try:
            self.sinks[claim.subscriber].deliver(event)
        except EventDeliveryError as exc:
            self._failed(claim, str(exc), report)
            return
        with self.uow_factory() as uow:
            event_repository(uow).delivered(claim)
            uow.commit()
        report.delivered += 1

    def _failed(self, claim: ClaimedDelivery, reason: str, report: PassReport) -> None:
        fields = {
            "event_id": str(claim.event_id),
            "subscriber": claim.subscriber,
            "attempt": claim.attempts,
            "reason": reason,
        }
        with self.uow_factory() as uow:
            repo = event_repository(uow)
            if claim.attempts >= self.policy.max_attempts:
                reason = f"gave up after {claim.attempts} attempts; last error: {reason}"
                repo.dead(claim, reason)
                report.dead += 1
                log.warning("event dead-lettered", **fields)
            else:
                repo.retry(claim, self.policy.backoff_s(claim.attempts), reason)
                report.retried += 1
                log.info("event delivery failed; retrying", **fields)
            uow.commit()

    def purge_if_due(self) -> int:
        if time.monotonic() < self._next_purge:
            return 0
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        with self.uow_factory() as uow:
            purged = event_repository(uow).purge(self.policy.retention_s, PURGE_BATCH)
            uow.commit()
        if purged:
            log.info("old completion events deleted", count=purged)
        return purged

    def run(self, stop: threading.Event) -> None:
        """Passes until ``stop`` is set; a database or listener outage is waited out."""
        outage = False
        while not stop.is_set():
            try:
                self.purge_if_due()
                report = self.run_pass() if self.sinks else PassReport()
                if outage:
                    log.info("event delivery resumed")
                    outage = False
                if report.claimed >= self.policy.batch:
                    continue  # more may be waiting
                self._idle(stop, report.next_due_s)
            except TransientError as exc:
                if not outage:
                    log.warning("event delivery paused", reason=str(exc)[:200])
                    outage = True
                stop.wait(min(self.policy.poll_s, 1.0))
            except Exception:  # a bug must not end the thread: logged, tried again
                log.exception("event delivery pass failed")
                stop.wait(self.policy.poll_s)

    def _idle(self, stop: threading.Event, next_due_s: float | None) -> None:
        timeout = self.policy.poll_s if next_due_s is None else next_due_s
        timeout = min(max(timeout, 0.0), self.policy.poll_s)
        if timeout <= 0:
            return
        if self.wake_ups is None or not self.sinks:
            stop.wait(timeout)
        else:
            self.wake_ups.wait(timeout)

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()
        if self.wake_ups is not None:
            self.wake_ups.close()


# --- the operator's use cases (emotionviz events) ---------------------------------------


def list_deliveries(
    uow_factory: UowFactory,
    *,
    status: str | None = None,
    event_ids: Sequence[uuid.UUID] = (),
    limit: int = 50,
) -> tuple[list[DeliveryRow], dict[str, int]]:
    """Deliveries (newest first) and the count of every delivery by status."""
    with uow_factory() as uow:
        repo = event_repository(uow)
        return repo.deliveries(status=status, event_ids=event_ids, limit=limit), (
            repo.status_counts()
        )


def replay_deliveries(
    uow_factory: UowFactory,
    *,
    event_ids: Sequence[uuid.UUID] = (),
    subscriber: str | None = None,
) -> tuple[int, list[uuid.UUID]]:
    """Send again: every dead delivery, or every delivery of ``event_ids``; (how many,
    the ids that name no event). If any id names no event, nothing is replayed."""
    with uow_factory() as uow:
        repo = event_repository(uow)
        unknown = repo.unknown_events(event_ids)
        if unknown:
            return 0, unknown
        count = repo.replay(event_ids=event_ids, subscriber=subscriber)
        uow.commit()
    return count, unknown
