"""Secrets out of everything we store, publish or log (pure, one process-wide list).

The composition root registers the process's secrets (API key, passwords in URLs) at
start-up; on top of that, patterns catch credentials we were never told about: an API
key in a query string or header echoed by a server, a password in a URL.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"
_MIN_SECRET_CHARS = 6
_PATTERNS = [
    re.compile(r"(x-goog-api-key['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+", re.IGNORECASE),
    re.compile(r"([?&](?:api_?)?key=)[^&\s'\"]+", re.IGNORECASE),
    re.compile(r"(://[^:/@\s]*:)[^@\s]+(@)"),  # an empty user too: redis://:password@
]
_secrets: list[str] = []


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (values under 6 chars are too
    likely to occur by chance to be masked everywhere)."""
    if value and len(value) >= _MIN_SECRET_CHARS and value not in _secrets:
        _secrets.append(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(
            lambda m: m.group(1) + MASK + (m.group(2) if m.lastindex == 2 else ""), text
        )
    return text


def redact_value(value: Any) -> Any:
    """``value`` with every string inside it (dict keys included) redacted. Values that
    are neither JSON containers nor strings are turned into redacted text: an exception
    or an object's repr can carry a secret as well."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(key): redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))
