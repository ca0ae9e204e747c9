"""What we store and log: PostgreSQL-safe text, no secrets, short stored reasons."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.exc import DataError

from domain.analysis import parse_analysis_text
from domain.errors import InvalidModelOutputError, ProviderError, failure_reason
from domain.intake import AskNext, parse_turn_text
from domain.redaction import (
    _PATTERNS,
    PATTERN_TRIGGERS,
    redact,
    redact_value,
    register_secret,
)
from domain.sanitize import from_model, one_line, storable, storable_text

pytestmark = pytest.mark.unit

HOSTILE = "a\x00b\ud800c\u202eRTL\u200f'; DROP TABLE users; --"


def test_storable_text_drops_nul_and_replaces_lone_surrogates_only() -> None:
    assert storable_text(HOSTILE) == "ab\ufffdc\u202eRTL\u200f'; DROP TABLE users; --"
    assert storable_text("plain 😀 text") == "plain 😀 text"
    cleaned = storable({"k\x00": [HOSTILE, {"n": 1, "t": None}], "ok": True})
    assert cleaned == {"k": [storable_text(HOSTILE), {"n": 1, "t": None}], "ok": True}
    json.dumps(cleaned).encode("utf-8")  # encodable: no lone surrogate left


def test_redaction_reaches_nested_values_and_unknown_objects() -> None:
    register_secret("planted-secret-0123")
    nested = {"a": ["x planted-secret-0123 y", {"url": "https://h/p?key=AIzaXYZ&alt=json"}]}
    assert "planted-secret-0123" not in json.dumps(redact_value(nested))
    assert "AIzaXYZ" not in json.dumps(redact_value(nested))
    assert redact_value(ValueError("boom planted-secret-0123")) == "boom ***"
    assert redact("postgresql://bob:hunter2@db/x") == "postgresql://bob:***@db/x"


def test_failure_reason_is_one_short_line_without_sql_or_secrets() -> None:
    register_secret("planted-secret-0123")
    library = DataError(
        "UPDATE visualizations SET summary=%(s)s", {"s": "x" * 900}, Exception("NUL")
    )
    reason = failure_reason(library)
    assert reason == "internal error (DataError); the worker log has the details"
    ours = ProviderError("gemini: rejected (400): ?key=planted-secret-0123\n" + "long " * 400)
    stored = failure_reason(ours, prefix="gave up after 4 attempts; last error: ")
    assert len(stored) <= 500 and "\n" not in stored and "planted-secret-0123" not in stored
    assert stored.startswith("gave up after 4 attempts; last error: gemini: rejected (400)")
    assert one_line("a\n\tb\x00", 10) == "a b"


def _analysis_json(summary: str) -> str:
    return json.dumps(
        {
            "summary": summary,
            "insights": ["one"],
            "visual_elements": {
                "palette": ["#fff"],
                "motifs": ["m"],
                "composition": "c",
                "metaphor": "m",
            },
            "image_prompt": "p",
        }
    )


def test_model_output_is_made_storable_where_it_is_parsed() -> None:
    register_secret("planted-secret-0123")
    analysis = parse_analysis_text(_analysis_json("NUL\x00 \ud800 planted-secret-0123"))
    assert analysis.summary == "NUL \ufffd ***"
    turn = parse_turn_text(
        json.dumps({"action": "ask", "question": "Why\x00?"}), must_complete=False
    )
    assert isinstance(turn, AskNext) and turn.question == "Why?"
    with pytest.raises(InvalidModelOutputError, match="not valid JSON"):
        parse_turn_text('{"action": "ask", "question": "raw \x00 NUL"}', must_complete=False)
    assert from_model({"t": "\x00"}) == {"t": ""}


# JSON-like values with the text a slow walk would change: NUL, lone surrogates, the
# registered secret (also beside a quote and a newline), URLs with passwords, key=...
_PIECES = ["a", "K", "e", "y", "=", "?", ":", "/", "@", '"', "\\", "\n", " ", "\x00", "\ud800"]
_PIECES += ["é", "planted-secret-0123", "x-goog-api-key", "://", "redis://:pw@h", "&key=v"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=8).map("".join)
_JSON_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@given(value=_JSON_LIKE)
def test_from_model_equals_the_full_walk_whatever_the_value(value: object) -> None:
    """The dump's shortcut never keeps what the walk would change."""
    register_secret("planted-secret-0123")
    assert from_model(value) == storable(redact_value(value))


def test_every_redaction_pattern_needs_a_trigger() -> None:
    """json_may_need_redaction relies on each pattern's match holding a trigger."""
    samples = ["x-goog-api-key: abcdef", "https://h/p?key=abcdef", "redis://:pw@host"]
    for pattern in _PATTERNS:
        matched = [s for s in samples if pattern.search(s)]
        assert matched, f"no sample for {pattern.pattern}: add one"
        for sample in matched:
            hit = pattern.search(sample)
            assert hit is not None
            assert any(t in hit.group(0).lower() for t in PATTERN_TRIGGERS), pattern.pattern
