"""Named operators (issue 24.4): tokens made and revoked by ``emotionviz operator``, the
console's sign-in with them, and the trail ``emotionviz audit`` reads.

A token is 32 random bytes (``secrets.token_urlsafe``) behind a recognisable prefix;
the database keeps only its SHA-256. A slow password hash (bcrypt, scrypt) defends a
guessable secret against a stolen table; a 256-bit random token cannot be guessed,
so one SHA-256 already makes a stolen hash useless, and, unsalted, it is looked up
through a unique index in one query instead of trying every row's salt.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from db.repositories.audit import ActionRow, Source
from db.repositories.operators import OperatorRow, operator_repository
from domain.errors import ConfigurationError, NotFoundError
from workers import bootstrap
from workers.operations.audit import cli_operator, record

TOKEN_PREFIX = "evo_"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
SCOPES = ("read", "write")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NewOperator:
    operator: OperatorRow
    token: str  # shown once, never stored


def describe(row: OperatorRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "scope": row.scope,
        "created_at": row.created_at.isoformat(timespec="seconds"),
        "created_by": row.created_by,
        "revoked_at": row.revoked_at.isoformat(timespec="seconds") if row.revoked_at else None,
    }


def add_operator(
    name: str, scope: str, *, operator: str | None = None, source: Source = "cli"
) -> NewOperator:
    if not NAME.match(name):
        raise ConfigurationError(
            f"operator name {name[:40]!r}: letters, digits, '.', '_', '@', '-' (up to 100)"
        )
    if scope not in SCOPES:
        raise ConfigurationError(f"scope must be read or write, not {scope[:20]!r}")
    who = operator or cli_operator()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with bootstrap.unit_of_work() as uow:
        row = operator_repository(uow).add(
            name=name, scope=scope, token_sha256=token_hash(token), created_by=who
        )
        record(
            uow, "operator.add", operator=who, source=source, target=name, detail={"scope": scope}
        )
        uow.commit()
    return NewOperator(row, token)


def list_operators(*, include_revoked: bool = False) -> list[OperatorRow]:
    with bootstrap.unit_of_work() as uow:
        return operator_repository(uow).listed(include_revoked=include_revoked)


def revoke_operator(
    name: str, *, operator: str | None = None, source: Source = "cli"
) -> OperatorRow:
    who = operator or cli_operator()
    with bootstrap.unit_of_work() as uow:
        row = operator_repository(uow).revoke(name)
        if row is None:
            raise NotFoundError(f"no live operator {name!r}")
        record(uow, "operator.revoke", operator=who, source=source, target=name)
        uow.commit()
    return row


def authenticate(token: str) -> OperatorRow | None:
    """The live operator holding ``token``, or None (a shared or wrong token)."""
    return by_token_hash(token_hash(token))


def by_token_hash(hashed: str) -> OperatorRow | None:
    """The live operator whose token hashes to ``hashed`` (the console's sessions)."""
    with bootstrap.unit_of_work() as uow:
        return operator_repository(uow).by_token_hash(hashed)


def trail(
    *,
    since: datetime | None = None,
    operator: str | None = None,
    action: str | None = None,
    limit: int = 100,
) -> list[ActionRow]:
    with bootstrap.unit_of_work() as uow:
        return uow.audit.listed(since=since, operator=operator, action=action, limit=limit)


def action_dict(row: ActionRow) -> dict[str, Any]:
    return {
        "at": row.at.isoformat(timespec="milliseconds"),
        "operator": row.operator,
        "source": row.source,
        "action": row.action,
        "target": row.target,
        "count": row.count,
        "detail": row.detail,
    }
