"""One job's life (its row, times, last error, where its message is) and the replay of
failed visualizations: ``emotionviz job`` / ``replay`` and the console's job page and
replay button."""

from __future__ import annotations

import uuid
from typing import Any

from db.repositories import EntryRow, IntakeSessionRow, VisualizationRow
from db.repositories.audit import Source
from domain.errors import NotFoundError
from domain.failures import failure_class
from domain.intake import next_step, parse_history
from domain.messages import EntryCreated, IntakeStep
from domain.vocabulary import VisualizationStyle
from workers import bootstrap
from workers.messaging.broker_state import locate
from workers.operations.audit import record
from workers.operations.published import require_published
from workers.settings import Settings


def replay_failed(
    entry_ids: list[uuid.UUID] | None,
    *,
    source: Source | None = None,
    operator: str | None = None,
) -> list[uuid.UUID]:
    """Failed visualizations (all, or these entries') back to pending, and published
    again after the commit. With ``source``, recorded in the operators' trail in the
    same transaction (the CLI: "cli"; the console's actions.py: "console" and the
    signed-in name); without, nothing is recorded. Returns the entries replayed. The
    bulk replay by filters, in batches: workers/operations/job_search.py."""
    with bootstrap.unit_of_work() as uow:
        rows = uow.visualizations.replay_failed(entry_ids)
        for entry_id, user_id, style in rows:
            uow.publish(
                EntryCreated(entry_id=entry_id, user_id=user_id, style=VisualizationStyle(style))
            )
        if rows and source is not None:
            record(
                uow,
                "replay",
                operator=operator,
                source=source,
                target="failed visualizations",
                count=len(rows),
                detail={"entries": "every failed" if entry_ids is None else len(entry_ids)},
            )
        uow.commit()
    require_published(uow)
    return [entry_id for entry_id, _, _ in rows]


def read_entry(entry_id: uuid.UUID) -> tuple[EntryRow, VisualizationRow | None]:
    """An entry and its visualization row, in one read (NotFoundError if no entry)."""
    with bootstrap.unit_of_work() as uow:
        entry = uow.entries.get(entry_id)
        if entry is None:
            raise NotFoundError(f"entry {entry_id} does not exist")
        return entry, uow.visualizations.get_by_entry(entry_id)


def read_session(session_id: uuid.UUID) -> IntakeSessionRow:
    with bootstrap.unit_of_work() as uow:
        session = uow.intake.get(session_id)
    if session is None:
        raise NotFoundError(f"intake session {session_id} does not exist")
    return session


def entry_life(
    settings: Settings,
    entry_id: uuid.UUID,
    rows: tuple[EntryRow, VisualizationRow | None] | None = None,
) -> dict[str, Any]:
    """One entry's life; ``rows`` when the caller has read them already."""
    entry, row = rows or read_entry(entry_id)
    life: dict[str, Any] = {"entry_id": str(entry_id), "user_id": str(entry.user_id)}
    if row is None:
        life["visualization"] = None
    else:
        life["visualization"] = {
            "status": row.status,
            "style": row.style,
            "created_at": row.created_at,
            "processing_started_at": row.processing_started_at,
            "processing_completed_at": row.processing_completed_at,
            "error_message": row.error_message,
            "error_class": failure_class(row.error_message) if row.error_message else None,
            "image_url": row.image_url,
            "thumbnail_url": row.thumbnail_url,
        }
    life["messages"] = _messages(settings, EntryCreated.queue_name, str(entry_id))
    return life


def session_life(
    settings: Settings, session_id: uuid.UUID, session: IntakeSessionRow | None = None
) -> dict[str, Any]:
    """One intake session's life; ``session`` when the caller has read it already."""
    session = session or read_session(session_id)
    history = parse_history(session.conversation_history)
    context = session.ai_context or {}
    life: dict[str, Any] = {
        "session_id": str(session_id),
        "user_id": str(session.user_id),
        "is_complete": session.is_complete,
        "questions": len(history),
        "answers": sum(1 for turn in history if turn.answer is not None),
        "next_step": None if session.is_complete else next_step(history),
        "created_at": session.created_at,
        "updated_at": session.updated_at,
        "completed_at": session.completed_at,
        "last_error": context.get("last_error"),
        "failed_step": context.get("failed_step"),
    }
    life["messages"] = _messages(settings, IntakeStep.queue_name, str(session_id))
    return life


def _messages(settings: Settings, queue: str, needle: str) -> list[dict[str, Any]]:
    found = locate(bootstrap.redis_client(), settings.redis_namespace, queue, needle)
    return [
        {"message_id": m.message_id, "where": m.place, "retries": m.retries, "error": m.error}
        for m in found
    ]
