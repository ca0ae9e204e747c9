"""Paused queues (migration 0009, issue 24.3): the truth that the workers' Redis mirror
(workers/messaging/pauses.py) is rebuilt from. Every change and every rebuild takes one
transaction-level advisory lock first, so that two of them cannot write the mirror in
the opposite order of their commits (workers/operations/pauses.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from db.uow import UnitOfWork

# pg_advisory_xact_lock's key for "the paused queues and their mirror" (any constant
# nobody else uses: 'pause' in ASCII).
PAUSES_LOCK = 0x7061757365


@dataclass(frozen=True)
class PausedRow:
    name: str
    paused_at: datetime
    paused_by: str
    reason: str | None


_COLUMNS = "name, paused_at, paused_by, reason"


class PauseRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def lock(self) -> None:
        """Serialise pause, resume and mirror rebuilds until this transaction ends."""
        self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PAUSES_LOCK})

    def pause(self, name: str, *, by: str, reason: str | None) -> PausedRow | None:
        """Pause ``name``; None when it already was (the first pause is kept)."""
        row = self.session.execute(
            text(
                "INSERT INTO paused_queues (name, paused_by, reason) VALUES (:name, :by, :reason) "
                f"ON CONFLICT (name) DO NOTHING RETURNING {_COLUMNS}"
            ),
            {"name": name, "by": by[:200], "reason": None if reason is None else reason[:500]},
        ).one_or_none()
        return None if row is None else PausedRow(*row)

    def resume(self, name: str) -> PausedRow | None:
        """Remove the pause; the row it was, or None when ``name`` was not paused."""
        row = self.session.execute(
            text(f"DELETE FROM paused_queues WHERE name = :name RETURNING {_COLUMNS}"),
            {"name": name},
        ).one_or_none()
        return None if row is None else PausedRow(*row)

    def paused(self) -> list[PausedRow]:
        rows = self.session.execute(
            text(f"SELECT {_COLUMNS} FROM paused_queues ORDER BY name")
        ).all()
        return [PausedRow(*row) for row in rows]


def pause_repository(uow: UnitOfWork) -> PauseRepository:
    """The repository on a unit of work's session (``uow.session``)."""
    return PauseRepository(uow.session)
