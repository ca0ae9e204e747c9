"""Failure classes: what kind of problem a stored failure reason describes, so operators
see "12 safety blocks, 3 timeouts" rather than 15 sentences. Pure; the reasons are
written by our own code (providers, services, the failure policy), so a handful of
markers classify them."""

from __future__ import annotations

import re

# Checked in order: the first class whose marker appears in the reason wins.
CLASS_MARKERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("crash_loop", ("worker stopped",)),
    ("rate_limited", ("429", "quota", "rate limit", "resource_exhausted")),
    ("safety", ("safety", "blocked", "prohibited")),
    ("timeout", ("timeout", "timed out", "deadline", "time limit")),
    ("server_error", ("500", "502", "503", "504", "unavailable", "internal error")),
    (
        "invalid_output",
        ("unusable", "invalid output", "not valid json", "no image", "invalid image"),
    ),
    ("configuration", ("401", "403", "404", "api key", "permission", "_model")),
    ("request_rejected", ("(400", "invalid_argument", "request rejected")),
    ("database", ("database",)),
    ("not_found", ("does not exist", "not found")),
    ("gave_up", ("gave up",)),
)
OTHER = "other"
# Every class's name, in the order above, then OTHER (filters, the console's choices).
FAILURE_CLASSES: tuple[str, ...] = (*(name for name, _ in CLASS_MARKERS), OTHER)


def _matches(marker: str, text: str) -> bool:
    # A status code is a whole number in the reason: "5000x5000" or "1429 bytes" is not
    # a 500 or a 429.
    if marker.lstrip("(").isdigit():
        return re.search(rf"(?<!\d){re.escape(marker)}(?!\d)", text) is not None
    return marker in text


def failure_class(reason: str | None) -> str:
    text = (reason or "").lower()
    for name, markers in CLASS_MARKERS:
        if any(_matches(marker, text) for marker in markers):
            return name
    return OTHER


def provider_error_class(exc: BaseException) -> str:
    """The class of a provider failure, for the errors-by-class metric."""
    from domain.errors import ContentBlockedError, InvalidImageError, InvalidModelOutputError

    if isinstance(exc, ContentBlockedError):
        return "safety"
    if isinstance(exc, InvalidModelOutputError | InvalidImageError):
        return "invalid_output"
    return failure_class(str(exc))
