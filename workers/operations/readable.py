"""What an operator reads, the same in the CLI and the console: an age, and an expected
failure as one line (with the exit code the CLI's contract gives it)."""

from __future__ import annotations

import redis

from domain.errors import (
    ConfigurationError,
    EmotionVizError,
    InvalidMessageError,
    PermanentError,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


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


def age(seconds: float | None) -> str:
    """A short age for people: 42 s, 7 min, 3.5 h, 2.0 d."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
