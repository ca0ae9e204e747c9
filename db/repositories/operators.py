"""Named operator tokens (migration 0009): ``emotionviz operator add|list|revoke`` and the
console's sign-in. Only the SHA-256 of a token is stored (workers/operations/operators.py
says why a fast hash is enough for a random token)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from db.uow import UnitOfWork

from domain.errors import ConflictError


@dataclass(frozen=True)
class OperatorRow:
    name: str
    scope: str  # read | write
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


_COLUMNS = "name, scope, created_at, created_by, revoked_at"


class OperatorRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, *, name: str, scope: str, token_sha256: str, created_by: str) -> OperatorRow:
        """A new live operator; ConflictError when a live one has the name."""
        try:
            with self.session.begin_nested():
                row = self.session.execute(
                    text(
                        "INSERT INTO operators (name, scope, token_sha256, created_by) "
                        f"VALUES (:name, :scope, :hash, :by) RETURNING {_COLUMNS}"
                    ),
                    {"name": name, "scope": scope, "hash": token_sha256, "by": created_by[:200]},
                ).one()
        except IntegrityError as exc:
            if "uq_operators_live_name" in str(exc.orig):
                raise ConflictError(
                    f"operator {name!r} already exists (revoke it first to replace its token)"
                ) from None
            raise
        return OperatorRow(*row)

    def by_token_hash(self, token_sha256: str) -> OperatorRow | None:
        """The live operator whose token hashes to ``token_sha256`` (the unique index)."""
        row = self.session.execute(
            text(
                f"SELECT {_COLUMNS} FROM operators "
                "WHERE token_sha256 = :hash AND revoked_at IS NULL"
            ),
            {"hash": token_sha256},
        ).one_or_none()
        return None if row is None else OperatorRow(*row)

    def listed(self, *, include_revoked: bool = False) -> list[OperatorRow]:
        where = "" if include_revoked else "WHERE revoked_at IS NULL"
        rows = self.session.execute(
            text(f"SELECT {_COLUMNS} FROM operators {where} ORDER BY name, created_at")
        ).all()
        return [OperatorRow(*row) for row in rows]

    def revoke(self, name: str) -> OperatorRow | None:
        """Revoke the live operator ``name`` (its row stays); None when there is none."""
        row = self.session.execute(
            text(
                "UPDATE operators SET revoked_at = now() "
                f"WHERE name = :name AND revoked_at IS NULL RETURNING {_COLUMNS}"
            ),
            {"name": name},
        ).one_or_none()
        return None if row is None else OperatorRow(*row)


def operator_repository(uow: UnitOfWork) -> OperatorRepository:
    """The repository on a unit of work's session (``uow.session``)."""
    return OperatorRepository(uow.session)
