"""Delivering completion events: the outbox the database's triggers fill (migration
0006) to the subscribers configured by EVENTS_* (workers/providers/event_sinks.py).

One dispatcher thread per worker process (workers/entrypoints/event_delivery.py), woken
by the triggers' own NOTIFY (db/event_listener.py) and, without one, every
EVENTS_POLL_S or when the next retry is due. A pass, in this order:

1. one transaction: give new events to this dispatcher's own subscribers (a delivery
   row each, past each subscriber's high-water mark; now and then a sweep for events
   that committed late), claim up to EVENTS_BATCH due deliveries (FOR UPDATE SKIP
   LOCKED: dispatchers in other processes take other rows) by moving their next attempt
   a lease ahead, commit;
2. for each claim, outside any transaction: send it (one HTTP request, or one enqueue),
   but only while the lease still has room for one more delivery (``per_delivery_s``):
   past that, or when the process stops, the claims not sent are given back (due now,
   the attempt not counted), never sent late by us while another dispatcher has taken
   them over;
3. record the outcome in a short transaction of its own, if the claim still holds the
   row (its token): delivered; or due again after a backoff; or dead, with the reason,
   after EVENTS_MAX_ATTEMPTS.

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
    listening: bool  # whether the last wait had its connection
    problem: str | None  # why not, safe to log

    def wait(self, timeout: float, stop: threading.Event | None = None) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 8
    min_backoff_s: float = 1.0
    max_backoff_s: float = 600.0
    lease_s: float = 60.0  # a claim's hold on its rows
    per_delivery_s: float = 20.0  # the longest one delivery can take (< lease_s)
    batch: int = 100
    poll_s: float = 5.0
    retention_s: float = 7 * 86400.0
    # Late commits: how far back the sweep looks, and how often it runs. A subscriber
    # seen for the first time also gets the events of the last late_window_s.
    late_window_s: float = 600.0
    sweep_every_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.per_delivery_s < self.lease_s:
            raise ValueError("per_delivery_s must be > 0 and shorter than lease_s")

    def backoff_s(self, attempts: int) -> float:
        """Before attempt ``attempts + 1``: exponential, half of it jittered."""
        base = min(self.max_backoff_s, self.min_backoff_s * 2.0 ** max(attempts - 1, 0))
        return base / 2 + random.uniform(0, base / 2)


@dataclass
class PassReport:
    fanned_out: int = 0  # delivery rows made (fan-out and sweep)
    claimed: int = 0
    released: int = 0  # claims given back unsent (out of lease, or stopping)
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
        self._next_sweep = 0.0
        self._listening: bool | None = None  # the wake-ups' state last logged

    @property
    def subscribers(self) -> list[str]:
        return sorted(self.sinks)

    def run_pass(self, stop: threading.Event | None = None) -> PassReport:
        report = PassReport()
        names = self.subscribers
        started = time.monotonic()  # before the claim: the lease runs from at most here
        with self.uow_factory() as uow:
            repo = event_repository(uow)
            report.fanned_out = repo.fan_out(names, self.policy.batch, self.policy.late_window_s)
            if started >= self._next_sweep:
                self._next_sweep = started + self.policy.sweep_every_s
                report.fanned_out += repo.sweep(names, self.policy.late_window_s)
            claims = repo.claim(names, self.policy.batch, self.policy.lease_s)
            uow.commit()
        report.claimed = len(claims)
        # Past this, one more delivery could end after the lease, when another dispatcher
        # may have claimed (and sent) the row again.
        send_by = started + self.policy.lease_s - self.policy.per_delivery_s
        for index, claim in enumerate(claims):
            stopping = stop is not None and stop.is_set()
            if index and (stopping or time.monotonic() > send_by):
                self._release(claims[index:], report)
                break
            self._deliver(claim, report)
        if report.claimed < self.policy.batch and not report.released:
            with self.uow_factory() as uow:
                report.next_due_s = event_repository(uow).seconds_to_next_due(names)
        return report

    def _release(self, claims: Sequence[ClaimedDelivery], report: PassReport) -> None:
        with self.uow_factory() as uow:
            repo = event_repository(uow)
            report.released = sum(repo.release(claim) for claim in claims)
            uow.commit()

    def _deliver(self, claim: ClaimedDelivery, report: PassReport) -> None:
        event = Event(claim.event_id, claim.kind, claim.created_at, claim.payload)
        try:
            self.sinks[claim.subscriber].deliver(event)
        except EventDeliveryError as exc:
            self._failed(claim, str(exc), report)
            return
        with self.uow_factory() as uow:
            held = event_repository(uow).delivered(claim)
            uow.commit()
        report.delivered += 1
        if not held:
            _outcome_dropped(claim, "delivered")

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
                held = repo.dead(claim, reason)
                report.dead += 1
                log.warning("event dead-lettered", **fields)
            else:
                held = repo.retry(claim, self.policy.backoff_s(claim.attempts), reason)
                report.retried += 1
                log.info("event delivery failed; retrying", **fields)
            uow.commit()
        if not held:
            _outcome_dropped(claim, "failed")

    def purge_if_due(self) -> int:
        if time.monotonic() < self._next_purge:
            return 0
        self._next_purge = time.monotonic() + PURGE_EVERY_S
        with self.uow_factory() as uow:
            purged = event_repository(uow).purge(self.policy.retention_s, PURGE_BATCH)
            uow.commit()
        if purged.pending or purged.dead:
            # Retention wins over delivery: say what was lost (events list showed it).
            log.warning(
                "completion events deleted before they were delivered",
                events=purged.events,
                pending=purged.pending,
                dead=purged.dead,
                retention_days=round(self.policy.retention_s / 86400, 2),
            )
        elif purged.events:
            log.info("old completion events deleted", count=purged.events)
        return purged.events

    def run(self, stop: threading.Event) -> None:
        """Passes until ``stop`` is set; a database outage is waited out, a listener
        outage only costs latency (polling). Closes the dispatcher's connections when
        it ends (in its own thread, which alone uses them)."""
        outage = False
        try:
            while not stop.is_set():
                try:
                    self.purge_if_due()
                    report = self.run_pass(stop) if self.sinks else PassReport()
                    if outage:
                        log.info("event delivery resumed")
                        outage = False
                    if report.claimed >= self.policy.batch or report.released:
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
        finally:
            self.close()

    def _idle(self, stop: threading.Event, next_due_s: float | None) -> None:
        timeout = self.policy.poll_s if next_due_s is None else next_due_s
        timeout = min(max(timeout, 0.0), self.policy.poll_s)
        if timeout <= 0:
            return
        if self.wake_ups is None or not self.sinks:
            stop.wait(timeout)
            return
        self.wake_ups.wait(timeout, stop)
        self._note_listener()

    def _note_listener(self) -> None:
        """Log a change of the wake-ups' state once (not every poll while it lasts)."""
        assert self.wake_ups is not None
        listening = self.wake_ups.listening
        if listening == self._listening:
            return
        if not listening:
            log.warning(
                "event wake-ups unavailable; polling",
                every_s=self.policy.poll_s,
                reason=self.wake_ups.problem,
            )
        elif self._listening is False:
            log.info("event wake-ups listening again")
        self._listening = listening

    def close(self) -> None:
        for sink in self.sinks.values():
            sink.close()
        if self.wake_ups is not None:
            self.wake_ups.close()


def _outcome_dropped(claim: ClaimedDelivery, outcome: str) -> None:
    # The lease passed (the delivery took longer than per_delivery_s) or the operator
    # replayed it: the row's new holder records the outcome; this one may be a duplicate.
    log.warning(
        "event delivery outcome not recorded: the claim no longer holds it",
        event_id=str(claim.event_id),
        subscriber=claim.subscriber,
        outcome=outcome,
    )


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
