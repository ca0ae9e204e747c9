"""The paid-call ledger read back (issue 23.3): ``emotionviz usage`` (calls, tokens and
estimated cost by person, UTC day or model, between two times, with a totals row) and the
day's spend that ``status`` shows (with the rows waiting on a daily budget)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from db.repositories.ledger import UsageBy, UsageRow, ledger_of
from domain.ledger import start_of_utc_day
from workers import bootstrap
from workers.settings import Settings


@dataclass(frozen=True)
class UsageReport:
    by: UsageBy
    since: datetime
    until: datetime
    rows: list[UsageRow]

    @property
    def totals(self) -> UsageRow:
        return UsageRow(
            "total",
            sum(r.calls for r in self.rows),
            sum(r.input_tokens for r in self.rows),
            sum(r.output_tokens for r in self.rows),
            sum(r.images for r in self.rows),
            sum(r.failed for r in self.rows),
            sum((r.cost_usd for r in self.rows), Decimal(0)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since.isoformat(timespec="seconds"),
            "until": self.until.isoformat(timespec="seconds"),
            "rows": [r.as_dict() for r in self.rows],
            "totals": self.totals.as_dict(),
        }


def usage_report(by: UsageBy, since: datetime, until: datetime) -> UsageReport:
    with bootstrap.unit_of_work() as uow:
        rows = ledger_of(uow).usage(by, since, until)
    return UsageReport(by, since, until, rows)


def spend_today(settings: Settings) -> dict[str, Any]:
    """For ``status``: today's (UTC) paid calls, their cost, the people who made them,
    and the rows waiting for the next day because their person's budget ran out."""
    today = start_of_utc_day(datetime.now(UTC))
    with bootstrap.unit_of_work() as uow:
        ledger = ledger_of(uow)
        day = ledger.day_spend(today)
        waiting = ledger.budget_waits()
    budget = settings.user_daily_budget_usd
    return {
        "since": today.isoformat(timespec="seconds"),
        "calls": day.calls,
        "cost_usd": str(day.cost_usd),
        "people": day.people,
        "user_daily_budget_usd": None if budget is None else str(budget),
        "waiting_on_budget": waiting,
    }
