"""Text fit for PostgreSQL, and model output fit to keep (pure).

PostgreSQL refuses two things Python strings can hold: NUL (U+0000, in ``text`` and as
``\\u0000`` in ``jsonb``) and lone UTF-16 surrogates (U+D800..U+DFFF, which are not
Unicode scalar values: psycopg cannot even encode them). Everything else a model may
say (RTL marks, emoji, control characters other than NUL) is valid text and kept.
"""

from __future__ import annotations

import json
import re
from typing import Any

from domain.redaction import json_may_need_redaction, redact_value

REPLACEMENT = "\ufffd"
_REFUSED = re.compile("[\x00\ud800-\udfff]")
# The same in a JSON document (json.dumps, ensure_ascii=False): NUL is always escaped
# there; a lone surrogate stays itself. (A string holding the text backslash-u0000
# matches too: it only takes the slow path.)
_REFUSED_IN_JSON = re.compile("\\\\u0000|[\ud800-\udfff]")


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
    Applied wherever provider output becomes data we keep.

    The common answer needs no change: one dump in C tells (no refused character, no
    registered secret, nothing a redaction pattern needs), and ``value`` comes back as
    it is, where walking it twice in Python cost ~0.1 ms per answer."""
    try:
        dumped = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # not JSON-like: the walk turns it into text
        return storable(redact_value(value))
    if _REFUSED_IN_JSON.search(dumped) or json_may_need_redaction(dumped):
        return storable(redact_value(value))
    return value


def one_line(text: str, limit: int) -> str:
    """``text`` on one line (runs of whitespace collapsed), at most ``limit`` chars."""
    flat = " ".join(storable_text(text).split())
    return flat if len(flat) <= limit else flat[: max(0, limit - 1)].rstrip() + "…"
