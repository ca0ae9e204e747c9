"""Settings that would make the reconciler resend work still waiting are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from workers.settings import Settings

pytestmark = pytest.mark.unit


def _settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg, arg-type]


def test_a_retry_backoff_longer_than_the_grace_window_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"MAX_BACKOFF_MS \(600000\) must be <= "):
        _settings(max_backoff_ms=600_000, reconcile_grace_s=300)


def test_the_defaults_and_a_disabled_grace_are_accepted() -> None:
    defaults = _settings()
    assert defaults.max_backoff_ms <= defaults.reconcile_grace_s * 1000
    assert _settings(max_backoff_ms=600_000, reconcile_grace_s=0).reconcile_grace_s == 0
