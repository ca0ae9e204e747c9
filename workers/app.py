"""Per-process singletons, built on first use: broker, providers, services."""

from __future__ import annotations

from functools import lru_cache

import dramatiq

from workers import runtime
from workers.broker import build_broker
from workers.logging import configure_logging, register_secret
from workers.producer import Producer
from workers.providers.factory import Providers, build_providers
from workers.services.intake import IntakeService
from workers.services.visualize import VisualizationService, VisualizeLimits
from workers.settings import get_settings


@lru_cache(maxsize=1)
def broker() -> dramatiq.Broker:
    settings = get_settings()
    for secret in (settings.gemini_api_key, settings.database_url, settings.redis_url):
        if secret is not None:
            register_secret(secret.get_secret_value())
    configure_logging(settings.log_level, settings.log_format)
    return build_broker(settings, runtime.redis_url(settings))


@lru_cache(maxsize=1)
def producer() -> Producer:
    return Producer(broker())


@lru_cache(maxsize=1)
def providers() -> Providers:
    settings = get_settings()
    return build_providers(settings, runtime.redis_url(settings))


@lru_cache(maxsize=1)
def visualization_service() -> VisualizationService:
    settings = get_settings()
    return VisualizationService(
        runtime.unit_of_work,
        providers(),
        VisualizeLimits(
            lease_s=settings.lease_s,
            thumbnail_px=settings.thumbnail_px,
            max_image_bytes=settings.max_image_bytes,
            max_image_pixels=settings.max_image_pixels,
        ),
    )


@lru_cache(maxsize=1)
def intake_service() -> IntakeService:
    return IntakeService(
        runtime.unit_of_work,
        providers().intake,
        producer().publish,
        max_steps=get_settings().intake_max_steps,
    )
