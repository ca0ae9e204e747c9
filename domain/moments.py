"""Ages and moments as operators type them: the one parser of every command and page
that takes a time (``jobs list``, ``replay``, ``usage``, ``audit``, ``dlq list``, the
console's jobs page).

An age is a number and a unit: 30s, 15m, 2h, 7d, 1w (a bare number is seconds). A
moment is an age back from now, or an ISO date (its 00:00) or date and time, UTC unless
it names its offset (2026-12-01, 2026-12-01T10:00, 2026-12-01T10:00Z). An empty value,
a value that is not a finite number, an age longer than MAX_AGE_DAYS or a moment outside
the years EARLIEST..LATEST is refused (TimeInputError names the option and the value),
so nothing downstream meets an overflow or "nan". Pure: no I/O.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from domain.errors import ConfigurationError

UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_AGE_DAYS = 36500  # about a century: older than anything this project keeps
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)  # a year short of datetime.max: room to add to it

_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhdw]?)")
AGE_FORMS = "30s, 15m, 2h, 7d, 1w"
MOMENT_FORMS = (
    "an age (2h, 7d, 1w) or a date/time (2026-12-01, 2026-12-01T10:00Z; UTC unless it says)"
)


class TimeInputError(ConfigurationError):
    """An age or a moment an operator typed is not valid: the CLI exits 2 with the line,
    the console answers 400 with it."""


def _refuse(what: str, detail: str) -> TimeInputError:
    return TimeInputError(f"{what}: {detail}" if what else detail)


def _nonblank(text: str, what: str) -> str:
    stripped = text.strip()
    if not stripped:
        # An empty value is refused, not read as "no filter": an unset shell variable
        # must not widen a command to every row.
        raise _refuse(what, "empty (give a value, or leave the option out)")
    return stripped


def _age_of(text: str, what: str) -> timedelta | None:
    """The age ``text`` states, None when it is not an age at all."""
    found = _AGE.fullmatch(text.lower())
    if found is None:
        return None
    seconds = float(found[1]) * UNITS[found[2] or "s"]
    if not math.isfinite(seconds) or seconds > MAX_AGE_DAYS * 86400:
        raise _refuse(what, f"{text[:40]!r} is too long an age (at most {MAX_AGE_DAYS}d)")
    return timedelta(seconds=seconds)


def parse_age(text: str, what: str = "") -> timedelta:
    """30s, 15m, 2h, 7d, 1w (a bare number: seconds), at most MAX_AGE_DAYS."""
    stripped = _nonblank(text, what)
    age = _age_of(stripped, what)
    if age is None:
        raise _refuse(what, f"not an age like {AGE_FORMS}: {stripped[:40]!r}")
    return age


def parse_moment(text: str, what: str = "", now: datetime | None = None) -> datetime:
    """An age back from ``now`` (default: the current time), or an ISO date or time
    (UTC unless it says); an aware datetime in UTC, between EARLIEST and LATEST."""
    stripped = _nonblank(text, what)
    now = now or datetime.now(UTC)
    age = _age_of(stripped, what)
    if age is not None:
        return now - age
    try:
        moment = datetime.fromisoformat(stripped)
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError:
        raise _refuse(what, f"not {MOMENT_FORMS}: {stripped[:40]!r}") from None
    except OverflowError:  # year 1 or 9999 moved by its offset
        moment = EARLIEST - timedelta(days=1)
    if not EARLIEST <= moment <= LATEST:
        raise _refuse(
            what,
            f"{stripped[:40]!r} is outside the years {EARLIEST.year} to {LATEST.year - 1}",
        )
    return moment
