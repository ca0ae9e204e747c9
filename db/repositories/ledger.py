"""The paid-call ledger (migration 0007, issue 23.3): one ``model_calls`` row per
attempt the model API received (domain/ledger.py), on the pooled connection as
psycopg's own (``ledger_of(uow)``).

The worker's insert is one statement in autocommit (``uow.single_statement()``), one
round trip per call, or rides in the statement of the entry's next write
(``RIDING_ROWS_CTE``, db/repositories/entry_pipeline.py); the budget's read is one
index range scan on ``(user_id, at)``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

import psycopg
from psycopg.types.json import Jsonb

from domain.ledger import PaidCall

UsageBy = Literal["user", "day", "model"]

_SPENT_SINCE = """
SELECT coalesce(sum(cost_usd), 0) FROM model_calls WHERE user_id = %(user_id)s AND at >= %(since)s
"""

# The rows of paid calls, as the CTE ``ledger``: alone (``record_all``, a row written
# at once) or in the statement of the job's write that carries them (its held rows,
# workers/services/ledger.py: ``holding``; the analysis checkpoint and the completion,
# db/repositories/entry_pipeline.py), where an INSERT each in a pipeline cost ~0.15 ms
# of client CPU for the pipeline and ~0.1 ms per row.
# model_calls has no FK (a row outlives its person): a person erased while their job
# ran must not be named by a row written after the erase committed. Then the cost is
# still recorded (the money was spent), with no person, entry or session. FOR KEY SHARE:
# an erase that deleted the person but has not committed yet is waited for (a few ms).
# A carrying statement reads the CTE in an InitPlan of its WHERE, so these rows and
# their FOR KEY SHARE on users come before its own row's lock: an erase's lock order
# (users, then its cascade to the rows), so the two cannot deadlock.
RIDING_ROWS_CTE = """ledger AS (
    INSERT INTO model_calls (user_id, entry_id, intake_session_id, model, kind,
                             input_tokens, output_tokens, image, outcome, cost_usd)
    SELECT CASE WHEN known.present THEN c.user_id END,
           CASE WHEN known.present THEN c.entry_id END,
           CASE WHEN known.present THEN c.intake_session_id END,
           c.model, c.kind, c.input_tokens, c.output_tokens, c.image, c.outcome, c.cost_usd
    FROM jsonb_to_recordset(%(ledger_rows)s::jsonb)
         AS c(user_id uuid, entry_id uuid, intake_session_id uuid, model text, kind text,
              input_tokens integer, output_tokens integer, image boolean, outcome text,
              cost_usd numeric)
    CROSS JOIN LATERAL (
        SELECT c.user_id IS NULL
               OR EXISTS (SELECT 1 FROM users WHERE id = c.user_id FOR KEY SHARE) AS present
    ) AS known
    RETURNING 1
)"""


def riding_rows(calls: Sequence[PaidCall]) -> dict[str, Jsonb]:
    """RIDING_ROWS_CTE's parameter: the rows as one JSON array (one dump in C, where
    ten arrays cost ~0.08 ms more of client CPU per statement); ids and the cost as
    text, which PostgreSQL reads exactly."""
    return {
        "ledger_rows": Jsonb(
            [
                {
                    "user_id": _text_or_none(c.owner.user_id),
                    "entry_id": _text_or_none(c.owner.entry_id),
                    "intake_session_id": _text_or_none(c.owner.intake_session_id),
                    "model": c.attempt.model[:200],
                    "kind": c.kind,
                    "input_tokens": c.attempt.input_tokens,
                    "output_tokens": c.attempt.output_tokens,
                    "image": c.attempt.image,
                    "outcome": c.attempt.outcome[:100],
                    "cost_usd": _text_or_none(c.cost_usd),
                }
                for c in calls
            ]
        )
    }


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


_RECORD_ALL = f"WITH {RIDING_ROWS_CTE}\nSELECT count(*) FROM ledger"


# The group key of each ``--by``: the person (NULL: a call no person's work asked for),
# the UTC day, the model.
_KEYS: dict[UsageBy, str] = {
    "user": "coalesce(user_id::text, '-')",
    "day": "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    "model": "model",
}

_USAGE = """
SELECT {key} AS key, count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),
       count(*) FILTER (WHERE image), count(*) FILTER (WHERE outcome <> 'ok'),
       coalesce(sum(cost_usd), 0)
FROM model_calls WHERE at >= %(since)s AND at < %(until)s
GROUP BY 1 ORDER BY {order}
"""

# Rows whose last attempt stopped on the daily budget (the reason the release keeps,
# domain/ledger.py: budget_exceeded): pending, their retry due at the next UTC day. The
# release sets dispatched_at to when the retry is due, so a waiting row is a pending row
# due in the future: a range of idx_visualizations_pending_dispatch (only the few rows
# with a delayed retry are read, never every pending row's reason).
_BUDGET_WAITS = """
SELECT count(*) FROM visualizations
WHERE status = 'pending' AND dispatched_at > now()
  AND error_message LIKE 'will retry: daily budget of %%'
"""

# A range of idx_model_calls_at (today's rows); read once per snapshot period.
_DAY_SPEND = """
SELECT count(*), coalesce(sum(cost_usd), 0), count(DISTINCT user_id)
FROM model_calls WHERE at >= %(since)s
"""


@dataclass(frozen=True)
class UsageRow:
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    images: int
    failed: int
    cost_usd: Decimal

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "images": self.images,
            "failed": self.failed,
            "cost_usd": str(self.cost_usd),
        }


@dataclass(frozen=True)
class DaySpend:
    calls: int
    cost_usd: Decimal
    people: int


class LedgerRepository:
    def __init__(self, driver: psycopg.Connection[Any]) -> None:
        self.driver = driver

    def record_all(self, calls: Sequence[PaidCall]) -> None:
        """Write ``calls``' rows now, in one statement (in the caller's transaction, or
        committed by itself in autocommit)."""
        if calls:
            self.driver.execute(_RECORD_ALL, riding_rows(calls), prepare=True)

    def spent_since(self, user_id: uuid.UUID, since: datetime) -> Decimal:
        row = self.driver.execute(
            _SPENT_SINCE, {"user_id": user_id, "since": since}, prepare=True
        ).fetchone()
        return Decimal(row[0]) if row else Decimal(0)

    def usage(self, by: UsageBy, since: datetime, until: datetime) -> list[UsageRow]:
        """Per group key, calls in [since, until); the costliest first (days: newest)."""
        order = "key DESC" if by == "day" else "7 DESC, key"
        sql = _USAGE.format(key=_KEYS[by], order=order)
        params = {"since": since, "until": until}
        rows = self.driver.execute(sql, params).fetchall()  # type: ignore[arg-type]
        return [
            UsageRow(str(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5]), r[6])
            for r in rows
        ]

    def budget_waits(self) -> int:
        row = self.driver.execute(_BUDGET_WAITS).fetchone()
        return int(row[0]) if row else 0

    def day_spend(self, since: datetime) -> DaySpend:
        row = self.driver.execute(_DAY_SPEND, {"since": since}).fetchone()
        assert row is not None
        return DaySpend(int(row[0]), Decimal(row[1]), int(row[2]))


class _DriverUnit(Protocol):
    """A unit of work lending its driver connection (db/uow.py), named structurally:
    the per-entry pipeline imports this module, and db/uow.py imports that one."""

    @property
    def driver(self) -> psycopg.Connection[Any]: ...


def ledger_of(uow: _DriverUnit) -> LedgerRepository:
    """The ledger on the unit's driver connection (db/uow.py lends it to repositories)."""
    return LedgerRepository(uow.driver)
