"""The CLI's one contract: exit 0 success, 1 the operation failed, 2 bad input or
configuration; one readable line on stderr for every expected failure, a traceback
only with ``--debug``.

Here: the parser that reports a bad argument in one line, argument types that name what
was wrong, the failure line (the translation of an exception into (exit code, line)
is workers/operations/readable.py's, shared with the console), and ``--json`` output.

The parser is built from this module (commands/__init__.py), so it imports nothing
heavy at the top: what a failure needs is imported when one happens.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import date
from typing import Any, NoReturn

from domain.errors import ConfigurationError
from domain.moments import TimeInputError, parse_age


class InputError(ConfigurationError):
    """The command line itself is wrong (a bad id, an impossible range): exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a bad argument is one line (not usage + error) and exit 2."""

    def error(self, message: str) -> NoReturn:
        from workers.operations.readable import EXIT_BAD_INPUT

        sys.stderr.write(f"{self.prog}: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_BAD_INPUT)


# --- argument types: each names what it expected --------------------------------------


def uuid_arg(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an id (a UUID): {value[:80]!r}") from None


def _whole_number(value: str, minimum: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value[:40]!r}") from None
    if number < minimum:
        raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {number}")
    return number


def positive_int(value: str) -> int:
    return _whole_number(value, 1)


def non_negative_int(value: str) -> int:
    return _whole_number(value, 0)


def iso_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value[:40]!r}") from None


def age_arg(value: str) -> float:
    """An age (30s, 15m, 2h, 7d, 1w; a bare number: seconds) -> seconds: the one parser of
    ages and moments, domain/moments.py."""
    try:
        return parse_age(value).total_seconds()
    except TimeInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def seconds_arg(value: str) -> float:
    """A timeout: seconds in (0, 60]."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 60:
        raise argparse.ArgumentTypeError(f"not a number of seconds in (0, 60]: {value!r}")
    return seconds


# --- errors --------------------------------------------------------------------------


def fail_line(command: str, exc: BaseException) -> tuple[int, str]:
    from workers.logging import scrub
    from workers.operations.readable import EXIT_FAILED, translate

    translated = translate(exc)
    if translated is None:
        code, text = EXIT_FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
        text += " (run with --debug for the traceback)"
    else:
        code, text = translated
    first = scrub(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
    return code, f"emotionviz {command}: {first[:500]}"


# --- output --------------------------------------------------------------------------


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
