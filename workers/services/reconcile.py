"""The reconciler: PostgreSQL is the source of truth, messages are nudges. If the broker
lost messages, or a worker died holding a lease, this finds the work in the database
and publishes it again (duplicates are harmless: handlers are idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from db.uow import UnitOfWork
from domain.errors import BrokerUnavailableError
from domain.messages import EntryCreated, IntakeStep, MessageV1


@dataclass(frozen=True)
class ReconcileReport:
    unfinished: int
    stuck: int
    intake: int

    def as_log(self) -> dict[str, object]:
        return {
            "republished_unfinished": self.unfinished,
            "republished_stuck": self.stuck,
            "republished_intake_steps": self.intake,
        }


def reconcile(
    uow_factory: Callable[[], UnitOfWork],
    *,
    grace_s: int,
    broker_lost_data: Callable[[], bool] = lambda: False,
    limit: int = 5000,
) -> ReconcileReport:
    """Republish entries without a finished visualization (older than ``grace_s``),
    rows whose lease ran out, and intake turns whose message was lost.

    When the broker lost its data since the last run (a flush, a restart without
    persistence), no message is waiting for anything: everything unfinished is
    republished at once, without the grace that otherwise spares work still queued."""
    if broker_lost_data():
        grace_s = 0
    with uow_factory() as uow:
        unfinished = uow.entries.ids_without_finished_visualization(limit, older_than_s=grace_s)
        stuck = uow.visualizations.stuck(limit)
        turns = uow.intake.due_turns(grace_s, limit)
        messages: list[MessageV1] = [
            EntryCreated(entry_id=e, user_id=u) for e, u in unfinished + stuck
        ]
        messages += [IntakeStep(session_id=s, user_id=u, step=n) for s, u, n in turns]
        for message in messages:
            uow.publish(message)
        uow.commit()
    if uow.publish_error:  # publishing is this job's whole point: retried by the caller
        raise BrokerUnavailableError(f"reconcile could not publish: {uow.publish_error}")
    return ReconcileReport(len(unfinished), len(stuck), len(turns))
