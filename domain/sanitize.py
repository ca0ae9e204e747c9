"""Text fit for PostgreSQL, and model output fit to keep (pure).

PostgreSQL refuses two things Python strings can hold: NUL (U+0000, in ``text`` and as
``\\u0000`` in ``jsonb``) and lone UTF-16 surrogates (U+D800..U+DFFF, which are not
Unicode scalar values: psycopg cannot even encode them). Everything else a model may
say (RTL marks, emoji, control characters other than NUL) is valid text and kept.
"""

from __future__ import annotations

import re
from typing import Any

from domain.redaction import redact_value

REPLACEMENT = "\ufffd"
_REFUSED = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """``text`` with NUL removed and lone surrogates replaced by U+FFFD."""
    if not _REFUSED.search(text):
        return text  # the common case: no copy
    return _REFUSED.sub(lambda m: "" if m.group() == "\x00" else REPLACEMENT, text)


def storable(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings, scalars) with every string, keys
    included, made storable. Other values are returned as they are."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


def from_model(value: Any) -> Any:
    """What a model said (parsed JSON, or a raw response as JSON), fit to store: no
    secret (a server may echo a request, key included), nothing PostgreSQL refuses.
    Applied wherever provider output becomes data we keep."""
    return storable(redact_value(value))


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (runs of whitespace collapsed), at most ``limit`` chars."""
    flat = " ".join(storable_text(text).split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)].rstrip() + "…"
