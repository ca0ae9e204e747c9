"""Versioned broker message contracts.

Messages carry ids, never data: the database is the source of truth. Each model is
strict (unknown fields and wrong types are rejected) so a bad producer gets a clear,
permanent error instead of a half-processed job. Their JSON Schemas are generated into
docs/messages/ by ``emotionviz schemas``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any, ClassVar, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from domain.errors import InvalidMessageError
from domain.vocabulary import VisualizationStyle


class MessageV1(BaseModel):
    """Base of every message body: version 1, strict, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor_name: ClassVar[str]
    queue_name: ClassVar[str]
    version: Literal[1] = 1

    def to_payload(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class EntryCreated(MessageV1):
    """An emotion entry was written; draw and analyse it."""

    actor_name: ClassVar[str] = "entry.created"
    queue_name: ClassVar[str] = "visualizations"

    entry_id: uuid.UUID = Field(description="emotion_entries.id")
    user_id: uuid.UUID = Field(description="users.id, must own the entry")
    style: VisualizationStyle | None = Field(
        default=None, description="abstract, diagram or metaphor; default abstract"
    )
    redraw: bool | None = Field(
        default=None,
        description=(
            "true: draw the completed entry again in ``style``, reusing its stored "
            "analysis (no analysis call); the new picture replaces the old one when done"
        ),
    )


class IntakeStep(MessageV1):
    """Produce turn ``step`` of an intake session: question ``step``, or the completion.

    Step 1 starts the conversation; step k > 1 is published once the answer to
    question k-1 is stored (docs/intake.md).
    """

    actor_name: ClassVar[str] = "intake.step"
    queue_name: ClassVar[str] = "intake"

    session_id: uuid.UUID = Field(description="intake_sessions.id")
    user_id: uuid.UUID = Field(description="users.id, must own the session")
    step: int = Field(
        ge=1, le=100, description="the turn to produce: 1 + the number of answers stored"
    )


class AnalyticsRecompute(MessageV1):
    """Recompute emotion_analytics for a period kind over a range, optionally for users."""

    actor_name: ClassVar[str] = "analytics.recompute"
    queue_name: ClassVar[str] = "analytics"

    period: Literal["day", "week", "month"]
    period_start: date
    period_end: date | None = None
    user_ids: list[uuid.UUID] | None = None

    @field_validator("user_ids")
    @classmethod
    def _not_empty(cls, value: list[uuid.UUID] | None) -> list[uuid.UUID] | None:
        if value is not None and not value:
            raise ValueError("user_ids, when given, must not be empty")
        return value


class MaintenanceReconcile(MessageV1):
    """Find work the database says is unfinished or stuck and publish it again.

    No fields: the database is the whole input. (Before this contract the message was
    sent with no arguments at all; both shapes are accepted.)
    """

    actor_name: ClassVar[str] = "maintenance.reconcile"
    queue_name: ClassVar[str] = "maintenance"


ALL_MESSAGES: tuple[type[MessageV1], ...] = (
    EntryCreated,
    IntakeStep,
    AnalyticsRecompute,
    MaintenanceReconcile,
)
QUEUES: tuple[str, ...] = tuple(dict.fromkeys(m.queue_name for m in ALL_MESSAGES))


class Publisher(Protocol):
    """Sends messages to the broker. The one implementation is the producer in
    workers/messaging; the unit of work calls it after commit, fakes replace it in tests."""

    def publish(self, message: MessageV1, *, delay_ms: int | None = None) -> str: ...

    def publish_many(self, messages: Sequence[MessageV1]) -> list[str]: ...


M = TypeVar("M", bound=MessageV1)


def parse_message(model: type[M], payload: object) -> M:
    """Validate a raw payload (as it came off the broker) into ``model``.

    Validated in pydantic's strict JSON mode: ids and dates as JSON strings are fine,
    but a string for a number, a number for an id, unknown or missing fields are not.
    """
    if not isinstance(payload, dict):
        raise InvalidMessageError(
            f"{model.actor_name} payload must be a JSON object, got {type(payload).__name__}"
        )
    try:
        return model.model_validate_json(json.dumps(payload), strict=True)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidMessageError(f"invalid {model.actor_name} v1 message: {problems}") from None
