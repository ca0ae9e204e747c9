"""The intake.step use case: produce the next question, or finish the intake.

One effect per step: the read, the model call and the write are separate (no
transaction is held open across a model call), and the write is a compare-and-set on
the history length, so of two deliveries of one step exactly one stores its result.
Completion creates the entry in the same transaction (``emotion_entries
.intake_session_id`` is unique as well), and ``entry.created`` is published only after
that commit. The NOTIFY rides the same transaction: a listener hears about a question
only once it can read it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from db.uow import UnitOfWork
from domain.errors import require_owned
from domain.intake import (
    NOTIFY_CHANNEL,
    AskNext,
    Complete,
    IntakeState,
    StepAction,
    decide_step,
    parse_history,
)
from domain.messages import EntryCreated, IntakeStep
from domain.providers import IntakeProvider
from domain.vocabulary import EntrySource
from workers.logging import get_logger

log = get_logger("emotionviz.intake")


class IntakeOutcome(StrEnum):
    ASKED = "asked"
    COMPLETED = "completed"
    ALREADY_DONE = "already_done"  # a repeated or late message: nothing to do
    LOST_RACE = "lost_race"  # another worker stored this step first


@dataclass(frozen=True)
class StepResult:
    outcome: IntakeOutcome
    entry_id: uuid.UUID | None = None


class IntakeService:
    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        provider: IntakeProvider,
        *,
        max_steps: int,
    ) -> None:
        self.uow_factory = uow_factory
        self.provider = provider
        self.max_steps = max_steps

    def process(self, message: IntakeStep) -> StepResult:
        state = self._load(message)
        if state is None:
            return StepResult(IntakeOutcome.ALREADY_DONE)
        started = time.monotonic()
        turn, meta = self.provider.next_turn(state)
        log.info(
            "intake turn decided",
            step=message.step,
            action="complete" if isinstance(turn, Complete) else "ask",
            provider_ms=round((time.monotonic() - started) * 1000, 1),
        )
        if isinstance(turn, AskNext):
            return self._store_question(message, turn, meta)
        return self._complete(message, state, turn, meta)

    def record_failure(self, message: IntakeStep, reason: str) -> None:
        """Keep why a step failed in ai_context; the conversation stays answerable."""
        with self.uow_factory() as uow:
            uow.intake.record_failure(message.session_id, message.step, reason)
            uow.commit()

    # --- steps -------------------------------------------------------------------

    def _load(self, message: IntakeStep) -> IntakeState | None:
        with self.uow_factory() as uow:
            row = require_owned(
                uow.intake.get(message.session_id),
                "intake session",
                message.session_id,
                message.user_id,
            )
            history = parse_history(row.conversation_history)
            action = decide_step(history, message.step, is_complete=row.is_complete)
            if action is StepAction.ALREADY_DONE:
                log.info("step already handled", is_complete=row.is_complete)
                return None
            return IntakeState(
                initial_situation=row.initial_situation,
                history=history,
                ai_context=dict(row.ai_context or {}),
                step=message.step,
                max_steps=self.max_steps,
            )

    def _store_question(
        self, message: IntakeStep, turn: AskNext, meta: dict[str, Any]
    ) -> StepResult:
        exchange = {
            "step": message.step,
            "question": turn.question,
            "asked_at": datetime.now(UTC).isoformat(),
            "answer": None,
            "answered_at": None,
        }
        context = {**turn.ai_context, **meta, "step": message.step}
        with self.uow_factory() as uow:
            stored = uow.intake.store_question(
                message.session_id,
                expected_len=message.step - 1,
                exchange=exchange,
                ai_context=context,
            )
            if not stored:
                log.info("another worker stored this step first")
                return StepResult(IntakeOutcome.LOST_RACE)
            uow.intake.notify(
                NOTIFY_CHANNEL,
                {"session_id": str(message.session_id), "step": message.step, "complete": False},
            )
            uow.commit()
        return StepResult(IntakeOutcome.ASKED)

    def _complete(
        self, message: IntakeStep, state: IntakeState, turn: Complete, meta: dict[str, Any]
    ) -> StepResult:
        context = {
            **state.ai_context,
            **meta,
            "step": message.step,
            "emotions": turn.emotions,
            "intensity": str(turn.intensity),
        }
        for stale in ("last_error", "failed_step", "failed_at"):  # an earlier failure
            context.pop(stale, None)
        with self.uow_factory() as uow:
            done = uow.intake.complete(
                message.session_id,
                expected_len=message.step - 1,
                summary=turn.summary,
                ai_context=context,
            )
            if not done:
                log.info("another worker completed this session first")
                return StepResult(IntakeOutcome.LOST_RACE)
            entry_id = uow.entries.add(
                user_id=message.user_id,
                situation=state.initial_situation,
                emotions=turn.emotions,
                intensity=turn.intensity,
                notes=turn.summary,
                source=EntrySource.INTAKE_FLOW.value,
                intake_session_id=message.session_id,
            )
            uow.intake.notify(
                NOTIFY_CHANNEL,
                {
                    "session_id": str(message.session_id),
                    "step": message.step,
                    "complete": True,
                    "entry_id": str(entry_id),
                },
            )
            uow.publish(EntryCreated(entry_id=entry_id, user_id=message.user_id))
            uow.commit()
        log.info("intake completed", entry_id=str(entry_id))
        return StepResult(IntakeOutcome.COMPLETED, entry_id)
