"""Analytics periods: calendar day, ISO week (Monday to Sunday) and calendar month, UTC.

Users carry no time zone, so every period is computed in UTC. ``period_end`` is the
last day of the period, inclusive, as the DATE columns of emotion_analytics hold it.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

PeriodKind = Literal["day", "week", "month"]
PERIOD_KINDS: tuple[PeriodKind, ...] = ("day", "week", "month")


@dataclass(frozen=True, order=True)
class Period:
    kind: PeriodKind
    start: date
    end: date  # inclusive

    @property
    def end_exclusive(self) -> date:
        return self.end + timedelta(days=1)


def period_containing(kind: PeriodKind, day: date) -> Period:
    if kind == "day":
        return Period(kind, day, day)
    if kind == "week":
        start = day - timedelta(days=day.weekday())
        return Period(kind, start, start + timedelta(days=6))
    start = day.replace(day=1)
    last = calendar.monthrange(day.year, day.month)[1]
    return Period(kind, start, day.replace(day=last))


def periods_containing(moment: datetime) -> list[Period]:
    """The day, ISO week and month (UTC) that contain an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("periods_containing needs an aware datetime")
    day = moment.astimezone(UTC).date()
    return [period_containing(kind, day) for kind in PERIOD_KINDS]


def previous_period(period: Period) -> Period:
    return period_containing(period.kind, period.start - timedelta(days=1))


def periods_between(kind: PeriodKind, first: date, last: date) -> list[Period]:
    """Every period of ``kind`` that overlaps [first, last]."""
    periods: list[Period] = []
    current = period_containing(kind, first)
    while current.start <= last:
        periods.append(current)
        current = period_containing(kind, current.end_exclusive)
    return periods
