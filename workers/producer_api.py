"""The producer API: what an upstream Python service (the API) calls to start work.

Every call is one unit of work: it writes what it must, commits, and only then
publishes (``UnitOfWork.publish``), so a worker never reads a row that is not visible
yet and a failed request publishes nothing::

    api = ProducerAPI(bootstrap.unit_of_work)      # or any UnitOfWork factory
    api.entry_created(entry_id, user_id)           # after the API committed the entry
    api.redraw(entry_id, user_id, "metaphor")      # a completed entry, in another style
    session_id = api.start_intake(user_id, "What happened ...")
    api.submit_answer(session_id, user_id, step=1, answer="...")

If the commit succeeded but the broker refused the message (after the producer's
retries), each call raises ``PublishFailedError``: the change is saved (do not repeat
the call), and the reconciler publishes its work again after ``RECONCILE_GRACE_S``.

Services in other languages write the same envelopes to the broker: docs/messages.md.

With tracing on (docs/monitoring.md, "Tracing"), each call is a span, a child of the
caller's current span: its unit of work and the message's publish span nest under it,
and the message carries the trace to the worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from db.uow import UnitOfWork
from domain.errors import (
    ConflictError,
    NotFoundError,
    PermanentError,
    PublishFailedError,
    require_owned,
)
from domain.intake import clean_answer, parse_history
from domain.messages import EntryCreated, IntakeStep
from domain.schemas import MAX_SITUATION_CHARS
from domain.vocabulary import VisualizationStatus, VisualizationStyle
from workers.messaging.producer import request_span

DEFAULT_RECONCILE_GRACE_S = 300  # RECONCILE_GRACE_S' default


def require_published(
    uow: UnitOfWork,
    what: str,
    *,
    saved_id: uuid.UUID | None = None,
    reconcile_grace_s: int = DEFAULT_RECONCILE_GRACE_S,
) -> None:
    """After a commit: raise PublishFailedError if its messages could not be published,
    saying that the change is saved and what heals it (the message is lost otherwise
    only to a log line, and the caller believes the work is on its way)."""
    if uow.publish_error is None:
        return
    raise PublishFailedError(
        f"{what} is saved, but its message could not be published ({uow.publish_error}); "
        "do not repeat the call: the reconciler publishes it again once "
        f"RECONCILE_GRACE_S ({_duration(reconcile_grace_s)}) has passed and any backlog "
        "ahead of it in the queue has moved on",
        saved_id=saved_id,
    )


def redraw_request(
    uow: UnitOfWork,
    entry_id: uuid.UUID,
    user_id: uuid.UUID | None,
    style: VisualizationStyle | None,
) -> EntryCreated:
    """The message asking to draw a completed entry again in ``style`` (None: its own),
    reusing its analysis (docs/operations.md, "Redraw"). ``user_id`` None: the entry's
    owner (an operator's request). Raises NotFoundError, OwnershipError, or
    ConflictError when the entry's visualization is not completed (one under way or
    failed is not redrawn: its own job, or a replay, finishes it first)."""
    entry = uow.entries.get(entry_id)
    if entry is None:
        raise NotFoundError(f"entry {entry_id} does not exist")
    require_owned(entry, "entry", entry_id, entry.user_id if user_id is None else user_id)
    row = uow.visualizations.get_by_entry(entry_id)
    if row is None or row.status != VisualizationStatus.COMPLETED:
        state = "it has no visualization yet" if row is None else f"its picture is {row.status}"
        raise ConflictError(f"entry {entry_id} cannot be redrawn: {state}, not completed")
    return EntryCreated(entry_id=entry_id, user_id=entry.user_id, style=style, redraw=True)


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    return f"{seconds} s, about {round(seconds / 60)} minutes"


class ProducerAPI:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        *,
        reconcile_grace_s: int = DEFAULT_RECONCILE_GRACE_S,
    ) -> None:
        """``reconcile_grace_s``: the workers' RECONCILE_GRACE_S, named in the error a
        failed publish raises."""
        self.uow_factory = uow_factory
        self.reconcile_grace_s = reconcile_grace_s

    def entry_created(
        self,
        entry_id: uuid.UUID,
        user_id: uuid.UUID,
        style: VisualizationStyle | None = None,
    ) -> None:
        """Ask for an entry's analysis and picture (call after the entry committed).
        Raises PublishFailedError if the broker refused the message."""
        with request_span("entry_created", entry_id=entry_id):
            with self.uow_factory() as uow:
                uow.publish(EntryCreated(entry_id=entry_id, user_id=user_id, style=style))
                uow.commit()
            self._published(uow, f"the request for entry {entry_id}", entry_id)

    def redraw(
        self,
        entry_id: uuid.UUID,
        user_id: uuid.UUID,
        style: VisualizationStyle | str | None = None,
    ) -> None:
        """Draw the user's completed entry again in ``style``, reusing its stored
        analysis (one image call, no analysis call); the new picture replaces the old
        one when it is done, and the old files are removed. Raises NotFoundError,
        OwnershipError (not the user's entry), ConflictError (not completed: pending,
        under way or failed), PublishFailedError (the broker refused the message)."""
        chosen = VisualizationStyle(style) if style is not None else None
        with request_span("redraw", entry_id=entry_id):
            with self.uow_factory() as uow:
                uow.publish(redraw_request(uow, entry_id, user_id, chosen))
                uow.commit()
            self._published(uow, f"the redraw of entry {entry_id}", entry_id)

    def start_intake(self, user_id: uuid.UUID, initial_situation: str) -> uuid.UUID:
        """Create an intake session and, after commit, ask for its first question.
        Raises PublishFailedError (its ``saved_id`` the new session) if the broker
        refused the message: the session exists, its question comes later."""
        situation = initial_situation.strip()
        if not situation:
            raise PermanentError("the situation is empty")
        if len(situation) > MAX_SITUATION_CHARS:
            raise PermanentError(f"the situation is longer than {MAX_SITUATION_CHARS} characters")
        with request_span("start_intake", user_id=user_id):
            with self.uow_factory() as uow:
                session_id = uow.intake.create(user_id, situation)
                uow.publish(IntakeStep(session_id=session_id, user_id=user_id, step=1))
                uow.commit()
            self._published(uow, f"intake session {session_id}", session_id)
        return session_id

    def submit_answer(
        self, session_id: uuid.UUID, user_id: uuid.UUID, *, step: int, answer: str
    ) -> int:
        """Store the answer to question ``step`` and, after commit, ask for turn step + 1.

        The row is locked while the answer is written, so two submissions of one answer
        cannot both succeed. Returns the step that was published; raises
        PublishFailedError if the broker refused it (the answer is stored).
        """
        text = clean_answer(answer)
        with request_span("submit_answer", session_id=session_id, step=step):
            return self._submit_answer(session_id, user_id, step, text)

    def _submit_answer(
        self, session_id: uuid.UUID, user_id: uuid.UUID, step: int, text: str
    ) -> int:
        with self.uow_factory() as uow:
            row = require_owned(
                uow.intake.get(session_id, for_update=True), "intake session", session_id, user_id
            )
            if row.is_complete:
                raise ConflictError(f"intake session {session_id} is already complete")
            history = parse_history(row.conversation_history)
            if not history or history[-1].step != step:
                raise ConflictError(
                    f"question {step} is not the one awaiting an answer "
                    f"(the session has {len(history)} questions)"
                )
            if history[-1].answer is not None:
                raise ConflictError(f"question {step} is already answered")
            # Only the two fields change; the stored question is kept byte for byte.
            answered = {
                **row.conversation_history[-1],
                "answer": text,
                "answered_at": datetime.now(UTC).isoformat(),
            }
            uow.intake.replace_last_exchange(session_id, answered)
            uow.publish(IntakeStep(session_id=session_id, user_id=user_id, step=step + 1))
            uow.commit()
        self._published(uow, f"the answer to question {step} of session {session_id}", session_id)
        return step + 1

    def _published(self, uow: UnitOfWork, what: str, saved_id: uuid.UUID) -> None:
        require_published(uow, what, saved_id=saved_id, reconcile_grace_s=self.reconcile_grace_s)
