"""Failure classes of the reasons our code stores."""

from __future__ import annotations

import pytest

from domain.errors import ContentBlockedError, InvalidModelOutputError, ProviderUnavailableError
from domain.failures import OTHER, failure_class, provider_error_class

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        (
            "gemini-3.1-flash-image: rate limited (429 RESOURCE_EXHAUSTED), retry in 20s",
            "rate_limited",
        ),
        ("gemini-3.5-flash: the prompt was blocked by the safety filter (SAFETY)", "safety"),
        ("gemini-3.5-flash: ReadTimeout talking to the API (timeout or connection)", "timeout"),
        ("gemini-3.5-flash: server error 503 UNAVAILABLE: overloaded", "server_error"),
        ("model 'x' was not found (404): set IMAGE_MODEL to a current model id", "configuration"),
        ("gemini-3.5-flash: request rejected (400 INVALID_ARGUMENT): bad", "request_rejected"),
        ("the worker stopped 3 times while processing this entry", "crash_loop"),
        ("gave up after 6 attempts; last error: something odd", "gave_up"),
        (
            "gave up after 2 attempts; last error: the job took longer than the job time "
            "limit of 10 s",
            "timeout",
        ),
        ("invalid image: 5000x5000 pixels is more than the limit", "invalid_output"),
        ("invalid image: 1429 bytes is not a picture", "invalid_output"),
        ("", OTHER),
        (None, OTHER),
    ],
)
def test_failure_class(reason: str | None, expected: str) -> None:
    assert failure_class(reason) == expected


def test_provider_error_class_prefers_the_error_type() -> None:
    assert provider_error_class(ContentBlockedError("finish reason OTHER")) == "safety"
    assert provider_error_class(InvalidModelOutputError("not json")) == "invalid_output"
    assert provider_error_class(ProviderUnavailableError("429 quota")) == "rate_limited"
