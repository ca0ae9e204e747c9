"""The CLI's one contract: exit 0 success, 1 the operation failed, 2 bad input or
configuration; one readable line on stderr for every expected failure, a traceback
only with ``--debug``.

Here: the parser that reports a bad argument in one line, argument types that name what
was wrong, the translation of any exception into (exit code, line), and ``--json``
output.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import date
from typing import TYPE_CHECKING, Any, NoReturn

import redis

from domain.errors import (
    ConfigurationError,
    EmotionVizError,
    InvalidMessageError,
    PermanentError,
)
from workers.logging import scrub

if TYPE_CHECKING:
    from db.uow import UnitOfWork

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class InputError(ConfigurationError):
    """The command line itself is wrong (a bad id, an impossible range): exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, except that a bad argument is one line (not usage + error) and exit 2."""

    def error(self, message: str) -> NoReturn:
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


# --- errors --------------------------------------------------------------------------


def translate(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, one line) for an expected failure; None for a bug (a traceback)."""
    if isinstance(exc, ConfigurationError):
        return EXIT_BAD_INPUT, str(exc)
    if isinstance(exc, InvalidMessageError | PermanentError | EmotionVizError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, redis.exceptions.AuthenticationError):
        return EXIT_BAD_INPUT, f"Redis refused the credentials in REDIS_URL: {exc}"
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return EXIT_FAILED, f"Redis is unreachable (REDIS_URL): {exc}"
    if isinstance(exc, redis.exceptions.ResponseError):
        return EXIT_FAILED, f"Redis refused a command: {exc}"
    from db.errors import translate_database_error

    translated = translate_database_error(exc)
    if translated is not None:
        return translate(translated)
    return None


def fail_line(command: str, exc: BaseException) -> tuple[int, str]:
    translated = translate(exc)
    if translated is None:
        code, text = EXIT_FAILED, f"unexpected error: {type(exc).__name__}: {exc}"
        text += " (run with --debug for the traceback)"
    else:
        code, text = translated
    first = scrub(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
    return code, f"emotionviz {command}: {first[:500]}"


def require_published(uow: UnitOfWork) -> None:
    """After a commit: the change is saved; say so plainly if its messages were not."""
    if uow.publish_error:
        raise EmotionVizError(
            f"saved, but {len(uow.unpublished)} messages could not be published "
            f"({uow.publish_error}); 'emotionviz reconcile' (or the scheduler) publishes them"
        )


# --- output --------------------------------------------------------------------------


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str, sort_keys=True) + "\n")
    sys.stdout.flush()


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
