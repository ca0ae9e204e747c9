"""RATE_LIMITER picks the gate the factory builds; building one opens no connection."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from workers.providers.factory import build_providers
from workers.providers.ratelimit import DramatiqRateGate, RateGate
from workers.settings import Settings

pytestmark = pytest.mark.unit

NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens: a connection attempt would fail


def gates(**settings: Any) -> tuple[Any, Any, Any]:
    built = build_providers(
        Settings(_env_file=None, provider="gemini", gemini_api_key="k", **settings),  # type: ignore[call-arg]
        redis.Redis.from_url(NOWHERE),
    )
    return built.analysis.inner.gate, built.images.inner.gate, built.intake.inner.gate  # type: ignore[attr-defined]


def test_the_exact_gate_is_the_default_and_holds_the_window_the_margin_longer() -> None:
    analysis, images, intake = gates(image_rpm=300, rate_limit_margin_s=0.5)
    assert type(images) is RateGate and type(analysis) is RateGate
    assert intake is analysis  # the intake shares the analysis model's limits
    assert images._limits[:2] == [300, 60_500_000]


def test_rate_limiter_dramatiq_selects_the_previous_limiter() -> None:
    analysis, images, _ = gates(rate_limiter="dramatiq")
    assert isinstance(images, DramatiqRateGate) and isinstance(analysis, DramatiqRateGate)
