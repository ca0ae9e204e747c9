"""Analytics rules that both the SQL and the docs rely on (docs/analytics.md).

A streak is the number of consecutive periods with entries, ending at this one, capped
at STREAK_CAP. The cap is what lets the incremental path (one user, one entry's
periods) compute exactly what a full recomputation computes: it needs to look back only
STREAK_CAP periods, and forward only STREAK_CAP periods (whose insights compare with,
or count a streak through, the changed one).
"""

from __future__ import annotations

import functools
from datetime import date, timedelta

from domain.periods import PeriodKind, period_containing

STREAK_CAP = 8
TOP_EMOTIONS = 3
INTENSITY_TREND_THRESHOLD = "0.10"  # a change of at least this much is a rise or a fall


@functools.lru_cache(maxsize=1024)
def shift_periods(kind: PeriodKind, start: date, count: int) -> date:
    """The start of the period ``count`` periods after (or, if negative, before) ``start``.
    Cached: every completed entry asks for the same few (its day, week and month,
    STREAK_CAP periods either side), ~60 date computations each time."""
    current = period_containing(kind, start)
    for _ in range(abs(count)):
        if count > 0:
            current = period_containing(kind, current.end_exclusive)
        else:
            current = period_containing(kind, current.start - timedelta(days=1))
    return current.start
