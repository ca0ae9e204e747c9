"""Emotion entries: read as the analysis sees them, added by the seed and by intake."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import EmotionEntry
from domain.analysis import EntrySnapshot


@dataclass(frozen=True)
class EntryRow:
    snapshot: EntrySnapshot
    user_id: uuid.UUID
    created_at: datetime


class EntryRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, entry_id: uuid.UUID) -> EntryRow | None:
        entry = self.session.get(EmotionEntry, entry_id)
        if entry is None:
            return None
        return EntryRow(
            snapshot=EntrySnapshot(
                entry_id=str(entry.id),
                situation=entry.situation,
                emotions=tuple(entry.emotions),
                intensity=entry.intensity,
                notes=entry.notes,
            ),
            user_id=entry.user_id,
            created_at=entry.created_at,
        )

    def add(
        self,
        *,
        user_id: uuid.UUID,
        situation: str,
        emotions: Sequence[str],
        intensity: Decimal,
        notes: str | None = None,
        source: str | None = None,
        intake_session_id: uuid.UUID | None = None,
        created_at: datetime | None = None,
    ) -> uuid.UUID:
        """A new entry; returns its id. ``source`` and ``created_at`` default to the
        column defaults ('manual', now)."""
        values: dict[str, Any] = {
            "user_id": user_id,
            "situation": situation,
            "emotions": list(emotions),
            "intensity": intensity,
            "notes": notes,
            "intake_session_id": intake_session_id,
        }
        if source is not None:
            values["source"] = source
        if created_at is not None:
            values["created_at"] = created_at
        entry = EmotionEntry(**values)
        self.session.add(entry)
        self.session.flush()
        return entry.id

    def situations_for_user(self, user_id: uuid.UUID) -> set[str]:
        stmt = select(EmotionEntry.situation).where(EmotionEntry.user_id == user_id)
        return set(self.session.scalars(stmt))
