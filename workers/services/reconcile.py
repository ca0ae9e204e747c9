"""The reconciler: PostgreSQL is the source of truth, messages are nudges. If the broker
lost messages, or a worker died holding a lease, this finds the work in the database
and publishes it again (duplicates are harmless: handlers are idempotent).
"""

from __future__ import annotations

from dataclasses import dataclass

from domain.messages import EntryCreated, IntakeStep, MessageV1
from workers import runtime
from workers.producer import Producer
from workers.settings import get_settings


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


def reconcile(producer: Producer | None = None, limit: int = 5000) -> ReconcileReport:
    from workers import app

    producer = producer or app.producer()
    settings = get_settings()
    with runtime.unit_of_work() as uow:
        unfinished = uow.entries.ids_without_finished_visualization(
            limit, older_than_s=settings.reconcile_grace_s
        )
        stuck = uow.visualizations.stuck(settings.lease_s, limit)
        turns = uow.intake.due_turns(settings.reconcile_grace_s, limit)
    messages: list[MessageV1] = [EntryCreated(entry_id=e, user_id=u) for e, u in unfinished + stuck]
    messages += [IntakeStep(session_id=s, user_id=u, step=n) for s, u, n in turns]
    producer.publish_many(messages)
    return ReconcileReport(len(unfinished), len(stuck), len(turns))
