"""Build the providers, store and rate gates a worker process uses, from settings."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from domain.errors import ConfigurationError
from domain.ledger import Ledger
from domain.providers import AnalysisProvider, ImageProvider, ImageStore, IntakeProvider
from workers.logging import get_logger
from workers.observability import metrics
from workers.providers.instrumented import CountedAnalysis, CountedImages, CountedIntake
from workers.providers.local import LocalAnalysisProvider, LocalImageProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.providers.ratelimit import DramatiqRateGate, RateGate
from workers.providers.storage import image_store
from workers.providers.traced import traced
from workers.settings import Settings

log = get_logger("emotionviz.providers")


@dataclass(frozen=True)
class Providers:
    analysis: AnalysisProvider
    images: ImageProvider
    store: ImageStore
    intake: IntakeProvider


@dataclass(frozen=True)
class ProviderChoice:
    """Which providers a worker runs, and why: PROVIDER itself ("setting"), or ``auto``
    resolved by the presence of GEMINI_API_KEY ("auto")."""

    analysis: str  # "gemini" | "local"
    image: str
    resolved_from: str  # "setting" | "auto"

    @property
    def placeholder(self) -> bool:
        """Offline providers that nobody asked for by name: placeholder pictures."""
        return self.resolved_from == "auto" and "local" in (self.analysis, self.image)

    def warning(self) -> str | None:
        if not self.placeholder:
            return None
        return (
            "PROVIDER=auto and no GEMINI_API_KEY: running the offline local providers, "
            "whose placeholder analyses and pictures are stored as completed; set "
            "PROVIDER=gemini and GEMINI_API_KEY for the real models, or PROVIDER=local "
            "to run the offline ones on purpose (a demo, a test)"
        )


def choose_providers(settings: Settings) -> ProviderChoice:
    """The providers the settings select. ConfigurationError if they cannot work:
    PROVIDER=gemini without GEMINI_API_KEY would fail every job."""
    if settings.provider == "gemini" and settings.gemini_api_key is None:
        raise ConfigurationError(
            "PROVIDER=gemini needs GEMINI_API_KEY (or PROVIDER=local for the offline providers)"
        )
    resolved = settings.resolved_provider()
    return ProviderChoice(
        analysis=resolved,
        image=resolved,
        resolved_from="auto" if settings.provider == "auto" else "setting",
    )


def announce_choice(choice: ProviderChoice) -> None:
    """At a worker's start: the choice as a metric (emotionviz_provider_info), and one
    warning line when ``auto`` fell back to the placeholder providers."""
    metrics.set_provider_info(choice.analysis, choice.image, choice.resolved_from)
    reason = choice.warning()
    if reason is not None:
        log.warning(
            "placeholder providers in use",
            reason=reason,
            analysis=choice.analysis,
            image=choice.image,
        )


def build_providers(
    settings: Settings, redis_client: redis.Redis, ledger: Ledger | None = None
) -> Providers:
    """The configured providers, each counting its failures by class (metrics) and,
    given a ledger, recording its paid calls and checking the daily budget."""
    built = traced(_build(settings, redis_client))  # a span per model call, tracing on
    local = settings.resolved_provider() == "local"
    analysis_model = "local" if local else settings.analysis_model
    image_model = "local" if local else settings.image_model
    return Providers(
        CountedAnalysis(built.analysis, analysis_model, ledger),
        CountedImages(built.images, image_model, ledger),
        built.store,
        CountedIntake(built.intake, analysis_model, ledger),
    )


def _build(settings: Settings, redis_client: redis.Redis) -> Providers:
    store = image_store(settings)
    if settings.resolved_provider() == "local":
        return Providers(
            LocalAnalysisProvider(), LocalImageProvider(), store, LocalIntakeProvider()
        )

    from workers.providers.gemini import GeminiAnalysisProvider, GeminiClient, GeminiImageProvider
    from workers.providers.gemini_intake import GeminiIntakeProvider

    choose_providers(settings)  # PROVIDER=gemini without a key: ConfigurationError
    assert settings.gemini_api_key is not None  # resolved to gemini: there is a key
    gate = DramatiqRateGate if settings.rate_limiter == "dramatiq" else RateGate
    slot_ttl_ms = int(settings.request_timeout_s * 1000 * 3)
    prefix = f"{settings.redis_namespace}:ratelimit"
    analysis_gate = gate(
        redis_client,
        f"{prefix}:{settings.analysis_model}",
        per_minute=settings.analysis_rpm,
        max_concurrent=settings.analysis_max_concurrent,
        max_wait_s=settings.rate_limit_wait_s,
        slot_ttl_ms=slot_ttl_ms,
        margin_s=settings.rate_limit_margin_s,
    )
    image_gate = gate(
        redis_client,
        f"{prefix}:{settings.image_model}",
        per_minute=settings.image_rpm,
        max_concurrent=settings.image_max_concurrent,
        max_wait_s=settings.rate_limit_wait_s,
        slot_ttl_ms=slot_ttl_ms,
        margin_s=settings.rate_limit_margin_s,
    )
    client = GeminiClient(
        api_key=settings.gemini_api_key.get_secret_value(),
        base_url=settings.gemini_base_url,
        api_version=settings.gemini_api_version,
        timeout_s=settings.request_timeout_s,
    )
    return Providers(
        GeminiAnalysisProvider(client, settings.analysis_model, analysis_gate),
        GeminiImageProvider(
            client,
            settings.image_model,
            image_gate,
            aspect_ratio=settings.image_aspect_ratio,
            image_size=settings.image_size,
        ),
        store,
        # The intake shares the analysis model and its rate limits.
        GeminiIntakeProvider(client, settings.analysis_model, analysis_gate),
    )
