"""Input schemas for data a person writes (the API service validates with these too)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.vocabulary import EntrySource, invalid_emotions

MAX_SITUATION_CHARS = 5000
MAX_NOTES_CHARS = 10000


class EmotionEntryCreate(BaseModel):
    """An emotion entry as a person submits it (the spec's application-level schema)."""

    model_config = ConfigDict(extra="forbid")

    situation: str = Field(min_length=1, max_length=MAX_SITUATION_CHARS)
    emotions: list[str] = Field(min_length=1, max_length=10)
    intensity: Decimal = Field(ge=0, le=1)
    notes: str = Field(default="", max_length=MAX_NOTES_CHARS)
    source: EntrySource = EntrySource.MANUAL

    @field_validator("situation")
    @classmethod
    def _situation_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("situation must contain text, not only white space")
        return value

    @field_validator("emotions")
    @classmethod
    def _emotions_in_vocabulary(cls, value: list[str]) -> list[str]:
        unknown = invalid_emotions(value)
        if unknown:
            raise ValueError(f"Invalid emotion: {', '.join(unknown)}")
        if len(set(value)) != len(value):
            raise ValueError("each emotion may be listed once")
        return value

    @field_validator("intensity")
    @classmethod
    def _round_intensity(cls, value: Decimal) -> Decimal:
        return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
