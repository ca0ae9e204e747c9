"""Intake sessions: created by the producer API, advanced one step at a time by the
intake service, announced with NOTIFY, and counted and replayed by operators."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from db.models import IntakeSession


@dataclass(frozen=True)
class IntakeSessionRow:
    """An intake session as read. ``conversation_history`` is the stored JSON array
    (validate it with domain.intake.parse_history)."""

    id: uuid.UUID
    user_id: uuid.UUID
    initial_situation: str
    conversation_history: list[dict[str, Any]]
    current_step: int
    is_complete: bool
    ai_context: dict[str, Any] | None
    final_summary: str | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


def intake_session_row(s: IntakeSession) -> IntakeSessionRow:
    return IntakeSessionRow(
        id=s.id,
        user_id=s.user_id,
        initial_situation=s.initial_situation,
        conversation_history=s.conversation_history,
        current_step=s.current_step,
        is_complete=s.is_complete,
        ai_context=s.ai_context,
        final_summary=s.final_summary,
        completed_at=s.completed_at,
        created_at=s.created_at,
        updated_at=s.updated_at,
    )


class IntakeRepository:
    """Writes after a model call are compare-and-set on the history length: of two
    workers racing on one step, exactly one stores its question or completion."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, session_id: uuid.UUID, *, for_update: bool = False) -> IntakeSessionRow | None:
        """The session, or None; ``for_update`` locks the row until the unit of work ends."""
        stmt = select(IntakeSession).where(IntakeSession.id == session_id)
        if for_update:
            stmt = stmt.with_for_update()
        row = self.session.scalar(stmt)
        return None if row is None else intake_session_row(row)

    def get_many(self, session_ids: Sequence[uuid.UUID]) -> list[IntakeSessionRow]:
        """The sessions of ``session_ids`` that exist, oldest first."""
        stmt = (
            select(IntakeSession)
            .where(IntakeSession.id.in_(list(session_ids)))
            .order_by(IntakeSession.created_at)
        )
        return [intake_session_row(row) for row in self.session.scalars(stmt)]

    def create(self, user_id: uuid.UUID, initial_situation: str) -> uuid.UUID:
        """A new session with no question yet."""
        row = IntakeSession(
            user_id=user_id, initial_situation=initial_situation, conversation_history=[]
        )
        self.session.add(row)
        self.session.flush()
        return row.id

    def replace_last_exchange(self, session_id: uuid.UUID, exchange: dict[str, Any]) -> None:
        """Overwrite the history's last element (the answer to the open question)."""
        self.session.execute(
            text(
                "UPDATE intake_sessions SET conversation_history = jsonb_set("
                "conversation_history, ARRAY[(jsonb_array_length(conversation_history) - 1)"
                "::text], CAST(:exchange AS jsonb)) WHERE id = :id"
            ),
            {"exchange": json.dumps(exchange), "id": session_id},
        )

    def store_question(
        self,
        session_id: uuid.UUID,
        *,
        expected_len: int,
        exchange: dict[str, Any],
        ai_context: dict[str, Any],
    ) -> bool:
        result = self.session.execute(
            text(
                "UPDATE intake_sessions SET conversation_history = conversation_history "
                "|| jsonb_build_array(CAST(:exchange AS jsonb)), current_step = :step, "
                "ai_context = CAST(:ctx AS jsonb) "
                "WHERE id = :id AND NOT is_complete "
                "AND jsonb_array_length(conversation_history) = :n"
            ),
            {
                "exchange": json.dumps(exchange),
                "step": exchange["step"],
                "ctx": json.dumps(ai_context),
                "id": session_id,
                "n": expected_len,
            },
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def complete(
        self, session_id: uuid.UUID, *, expected_len: int, summary: str, ai_context: dict[str, Any]
    ) -> bool:
        result = self.session.execute(
            text(
                "UPDATE intake_sessions SET is_complete = true, completed_at = now(), "
                "final_summary = :summary, ai_context = CAST(:ctx AS jsonb) "
                "WHERE id = :id AND NOT is_complete "
                "AND jsonb_array_length(conversation_history) = :n"
            ),
            {
                "summary": summary,
                "ctx": json.dumps(ai_context),
                "id": session_id,
                "n": expected_len,
            },
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def record_failure(self, session_id: uuid.UUID, step: int, reason: str) -> None:
        """Keep the reason in ai_context; the conversation itself stays as it was."""
        self.session.execute(
            text(
                "UPDATE intake_sessions SET ai_context = coalesce(ai_context, '{}'::jsonb) "
                "|| jsonb_build_object('last_error', CAST(:reason AS text), "
                "'failed_step', CAST(:step AS int), 'failed_at', now()) WHERE id = :id"
            ),
            {"reason": reason[:1000], "step": step, "id": session_id},
        )

    def state_counts(self) -> dict[str, int]:
        """Sessions by state: complete, waiting for the person, waiting for a worker,
        and failed (the last step failed for good; an operator can replay it)."""
        row = self.session.execute(
            text(
                "SELECT count(*) FILTER (WHERE done) AS complete, "
                "count(*) FILTER (WHERE NOT done AND failed) AS failed, "
                "count(*) FILTER (WHERE NOT done AND NOT failed AND NOT answered) "
                "AS waiting_for_person, "
                "count(*) FILTER (WHERE NOT done AND NOT failed AND answered) "
                "AS waiting_for_worker "
                "FROM (SELECT is_complete AS done, "
                "coalesce(ai_context ? 'failed_step', false) AS failed, "
                # No question yet counts as answered: the next turn is the worker's.
                "jsonb_typeof(conversation_history -> -1 -> 'answer') "
                "IS DISTINCT FROM 'null' AS answered FROM intake_sessions) AS s"
            )
        ).one()
        return dict(row._mapping)

    def open_state_counts(self) -> dict[str, int]:
        """Open sessions only (the partial index on incomplete sessions), by state:
        failed, waiting for the person, waiting for a worker. Cheap enough for a
        metrics scrape however many sessions have completed."""
        row = self.session.execute(
            text(
                "SELECT count(*) FILTER (WHERE failed) AS failed, "
                "count(*) FILTER (WHERE NOT failed AND NOT answered) AS waiting_for_person, "
                "count(*) FILTER (WHERE NOT failed AND answered) AS waiting_for_worker "
                "FROM (SELECT coalesce(ai_context ? 'failed_step', false) AS failed, "
                "jsonb_typeof(conversation_history -> -1 -> 'answer') "
                "IS DISTINCT FROM 'null' AS answered FROM intake_sessions "
                "WHERE NOT is_complete) AS s"
            )
        ).one()
        return dict(row._mapping)

    def touch(self, session_ids: list[uuid.UUID]) -> None:
        """Mark turns the reconciler sends again (their ``updated_at`` moves to now), so
        each is due again only after another grace window, never on every pass."""
        self.session.execute(
            text(
                "UPDATE intake_sessions SET updated_at = now() "
                "WHERE id = ANY(CAST(:ids AS uuid[])) AND NOT is_complete"
            ),
            {"ids": session_ids},
        )

    def due_turns(self, older_than_s: int, limit: int) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
        """(session, user, step) of open sessions whose next turn is due (no question
        yet, or the last one answered) but nothing happened for ``older_than_s``: the
        intake.step was lost. Sessions whose last attempt at that step failed for good
        are left to an operator (replaying them would fail the same way)."""
        rows = self.session.execute(
            text(
                "SELECT id, user_id, jsonb_array_length(conversation_history) + 1 AS step "
                "FROM intake_sessions "
                "WHERE NOT is_complete AND updated_at < now() - make_interval(secs => :grace) "
                "AND jsonb_typeof(conversation_history -> -1 -> 'answer') "
                "IS DISTINCT FROM 'null' "
                "AND (ai_context -> 'failed_step') IS DISTINCT FROM "
                "to_jsonb(jsonb_array_length(conversation_history) + 1) "
                "ORDER BY updated_at LIMIT :limit"
            ),
            {"grace": older_than_s, "limit": limit},
        )
        return [(row.id, row.user_id, int(row.step)) for row in rows]

    def notify(self, channel: str, payload: dict[str, Any]) -> None:
        """Delivered to LISTENers when (and only if) the transaction commits."""
        self.session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": channel, "payload": json.dumps(payload)},
        )
