"""Producer helpers for the API service: the two halves of an intake conversation.

Both write in the caller's SQLAlchemy session and publish ``intake.step`` only after
the caller commits (so a worker never reads a session, or an answer, that is not
visible yet; a rolled-back request publishes nothing):

    with Session(engine) as session:
        session_id = start_session(session, producer, user_id, "What happened ...")
        session.commit()
    ...
    with Session(engine) as session:
        submit_answer(session, producer, session_id, user_id, step=1, answer="...")
        session.commit()
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import flag_modified

from db.models import IntakeSession
from db.repositories import IntakeRepository
from domain.errors import ConflictError, PermanentError, require_owned
from domain.intake import clean_answer, parse_history
from domain.messages import IntakeStep
from domain.schemas import MAX_SITUATION_CHARS
from workers.producer import Producer


def start_session(
    session: Session, producer: Producer, user_id: uuid.UUID, initial_situation: str
) -> uuid.UUID:
    """Create the session and, after commit, ask for its first question (step 1)."""
    situation = initial_situation.strip()
    if not situation:
        raise PermanentError("the situation is empty")
    if len(situation) > MAX_SITUATION_CHARS:
        raise PermanentError(f"the situation is longer than {MAX_SITUATION_CHARS} characters")
    row = IntakeRepository(session).add(
        IntakeSession(user_id=user_id, initial_situation=situation, conversation_history=[])
    )
    producer.publish_on_commit(session, IntakeStep(session_id=row.id, user_id=user_id, step=1))
    return row.id


def submit_answer(
    session: Session,
    producer: Producer,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    *,
    step: int,
    answer: str,
) -> int:
    """Store the answer to question ``step`` and, after commit, ask for turn step + 1.

    The row is locked while the answer is written, so two submissions of one answer
    cannot both succeed. Returns the step that was published.
    """
    text = clean_answer(answer)
    row = require_owned(
        IntakeRepository(session).get(session_id, for_update=True),
        "intake session",
        session_id,
        user_id,
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
    row.conversation_history = [*row.conversation_history[:-1], answered]
    flag_modified(row, "conversation_history")
    producer.publish_on_commit(
        session, IntakeStep(session_id=session_id, user_id=user_id, step=step + 1)
    )
    return step + 1
