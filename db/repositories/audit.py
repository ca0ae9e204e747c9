"""The operators' trail (migration 0009): one ``operator_actions`` row per change made
through the CLI or the console, and per console read of a person's entry text.

Written in the transaction of the change where the change is one transaction (so a
rolled-back replay leaves no record), otherwise right after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from psycopg.types.json import Jsonb
from sqlalchemy import text
from sqlalchemy.orm import Session

Source = Literal["cli", "console"]

_RECORD = text(
    """
INSERT INTO operator_actions (operator, source, action, target, count, detail)
VALUES (:operator, :source, :action, :target, :count, :detail)
"""
)


@dataclass(frozen=True)
class ActionRow:
    at: datetime
    operator: str
    source: str
    action: str
    target: str | None
    count: int | None
    detail: dict[str, Any]


class AuditRepository:
    """``uow.audit``: the operators' trail."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def record(
        self,
        *,
        operator: str,
        source: Source,
        action: str,
        target: str | None = None,
        count: int | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        self.session.execute(
            _RECORD,
            {
                "operator": operator[:200],
                "source": source,
                "action": action[:100],
                "target": None if target is None else target[:1000],
                "count": count,
                "detail": Jsonb(dict(detail or {})),
            },
        )

    def listed(
        self,
        *,
        since: datetime | None = None,
        operator: str | None = None,
        action: str | None = None,
        limit: int = 100,
    ) -> list[ActionRow]:
        """Newest first (the ``at`` index; with ``operator``, the operator's)."""
        rows = self.session.execute(
            text(
                "SELECT at, operator, source, action, target, count, detail "
                "FROM operator_actions "
                "WHERE (CAST(:since AS timestamptz) IS NULL OR at >= :since) "
                "AND (CAST(:operator AS text) IS NULL OR operator = :operator) "
                "AND (CAST(:action AS text) IS NULL OR action = :action) "
                "ORDER BY at DESC, id DESC LIMIT :limit"
            ),
            {"since": since, "operator": operator, "action": action, "limit": limit},
        ).all()
        return [ActionRow(*row) for row in rows]
