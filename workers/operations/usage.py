"""The paid-call ledger read back (issue 23.3): ``emotionviz usage`` (calls, tokens and
estimated cost by person, UTC day or model, between two times, with a totals row) and the
day's spend that ``status`` shows (with the rows waiting on a daily budget)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from db.repositories.ledger import UsageBy, UsageRow, ledger_of
from workers import bootstrap


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
