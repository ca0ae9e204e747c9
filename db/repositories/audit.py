"""The operators' trail (migration 0009): one ``operator_actions`` row per change made
through the CLI or the console, and per console read of a person's entry text.

Written in the transaction of the change where the change is one transaction (so a
rolled-back replay leaves no record), otherwise right after it.
"""

from __future__ import annotations

from collections.abc import Mapping
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
