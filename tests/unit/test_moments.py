"""The one parser of ages and moments (domain/moments.py) that jobs list, replay,
usage, audit, dlq list and the console's jobs page share: the forms each accepted
before still parse; empty, non-finite and out-of-range values are one TimeInputError
naming the option (never a ValueError or an OverflowError)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from domain.moments import MAX_AGE_DAYS, TimeInputError, parse_age, parse_moment
from workers.entrypoints.cli_contract import age_arg

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("typed", "age"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        ("1w", timedelta(weeks=1)),
        ("1.5h", timedelta(minutes=90)),
        (" 2H ", timedelta(hours=2)),
        ("3600", timedelta(hours=1)),  # a bare number: seconds (dlq --older-than's form)
        ("0", timedelta(0)),
        (f"{MAX_AGE_DAYS}d", timedelta(days=MAX_AGE_DAYS)),
    ],
)
def test_ages_in_every_form_and_as_a_moment_back_from_now(typed: str, age: timedelta) -> None:
    assert parse_age(typed) == age
    assert parse_moment(typed, "since", NOW) == NOW - age


@pytest.mark.parametrize(
    ("typed", "moment"),
    [
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),  # a date: its 00:00 UTC
        ("2026-12-01T09:30", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),  # UTC unless it says
        ("2026-12-01 09:30", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
        ("2026-12-01T09:30Z", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
        ("2026-12-01T09:30+02:00", datetime(2026, 12, 1, 7, 30, tzinfo=UTC)),
    ],
)
def test_dates_and_times_are_utc_unless_they_say(typed: str, moment: datetime) -> None:
    parsed = parse_moment(typed, "since", NOW)
    assert parsed == moment and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ("", "--since: empty"),
        ("   ", "--since: empty"),
        ("nan", "--since: not an age"),
        ("inf", "--since: not an age"),
        ("1e400d", "--since: not an age"),
        ("-5d", "--since: not an age"),
        ("yesterday", "--since: not an age"),
        ("99999999d", "too long an age"),
        ("99999999999d", "too long an age"),
        ("9" * 400 + "d", "too long an age"),
        (f"{MAX_AGE_DAYS + 1}d", "too long an age"),
        ("0001-01-01T00:00+05:00", "outside the years"),  # an OverflowError in UTC
        ("9999-12-31T23:00-05:00", "outside the years"),
        ("1800-01-01", "outside the years"),
    ],
)
def test_bad_moments_are_one_error_naming_the_option(typed: str, says: str) -> None:
    with pytest.raises(TimeInputError) as raised:
        parse_moment(typed, "--since", NOW)
    assert says in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize("typed", ["", "nan", "1e400d", "99999999d", "2026-12-01", "-1h"])
def test_bad_ages_are_refused_by_the_cli_type_too(typed: str) -> None:
    with pytest.raises(TimeInputError):
        parse_age(typed, "older-than")
    with pytest.raises(argparse.ArgumentTypeError):
        age_arg(typed)
    assert age_arg("2h") == 7200.0
