"""Secrets out of everything we store, publish or log (pure, one process-wide list).

The composition root registers the process's secrets (API key, passwords in URLs) at
start-up; on top of that, patterns catch credentials we were never told about: an API
key in a query string or header echoed by a server, a password in a URL.
"""

from __future__ import annotations

import json
import re
from typing import Any

MASK = "***"
_MIN_SECRET_CHARS = 6
_PATTERNS = [
    re.compile(r"(x-goog-api-key['\"]?\s*[:=]\s*['\"]?)[^'\"\s,}]+", re.IGNORECASE),
    re.compile(r"([?&](?:api_?)?key=)[^&\s'\"]+", re.IGNORECASE),
    re.compile(r"(://[^:/@\s]*:)[^@\s]+(@)"),  # an empty user too: redis://:password@
]
# Text every match of a pattern above contains (compared lower-case): a pattern added
# there needs its own here (tests/unit/test_sanitize.py checks each has one).
PATTERN_TRIGGERS = ("key", "://")
_secrets: list[str] = []
_secrets_in_json: list[str] = []  # each as JSON spells it inside a string


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it appears from now on (values under 6 chars are too
    likely to occur by chance to be masked everywhere)."""
    if value and len(value) >= _MIN_SECRET_CHARS and value not in _secrets:
        _secrets.append(value)
        _secrets_in_json.append(json.dumps(value, ensure_ascii=False)[1:-1])


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(
            lambda m: m.group(1) + MASK + (m.group(2) if m.lastindex == 2 else ""), text
        )
    return text


def json_may_need_redaction(dumped: str) -> bool:
    """Whether a JSON document (``json.dumps(value, ensure_ascii=False)``) may hold text
    ``redact`` would mask in one of its strings. False only when none can: no
    registered secret appears in it (as JSON spells it), and no text any pattern needs.
    JSON's escapes never split a run of letters, ``://`` or a secret without quotes,
    backslashes or control characters, so what a string holds the document holds."""
    lowered = dumped.lower()
    if any(trigger in lowered for trigger in PATTERN_TRIGGERS):
        return True
    return any(secret in dumped for secret in _secrets_in_json)


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
