"""Who did what: every change made through the CLI or the console calls ``audited``
(or ``record`` inside its own unit of work) so it appears in ``emotionviz audit``.

The CLI's operator is ``EMOTIONVIZ_OPERATOR`` when set, else the login name of the
process (``getpass.getuser()``); the console's is the name of the token that signed in.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from typing import Any

from db.repositories.audit import Source
from db.uow import UnitOfWork
from workers import bootstrap


def cli_operator() -> str:
    named = os.environ.get("EMOTIONVIZ_OPERATOR", "").strip()
    if named:
        return named
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container's arbitrary uid)
        return f"uid:{os.getuid()}"


def record(
    uow: UnitOfWork,
    action: str,
    *,
    operator: str | None = None,
    source: Source = "cli",
    target: str | None = None,
    count: int | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record the action in ``uow``'s transaction (committed with the change)."""
    uow.audit.record(
        operator=operator or cli_operator(),
        source=source,
        action=action,
        target=target,
        count=count,
        detail=detail,
    )


def audited(
    action: str,
    *,
    operator: str | None = None,
    source: Source = "cli",
    target: str | None = None,
    count: int | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Record an action that is not one transaction (a Redis purge, a restore) after it
    was done, in a transaction of its own."""
    with bootstrap.unit_of_work() as uow:
        record(
            uow,
            action,
            operator=operator,
            source=source,
            target=target,
            count=count,
            detail=detail,
        )
        uow.commit()
