"""Providers wrapped to count their failures by class (the errors-by-class metric):
429s, 5xx, timeouts, safety blocks, unusable output. Durations are measured closer to
the wire, in the Gemini client, so they leave out our rate limiter's wait."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from domain.analysis import Analysis, AnalysisResult, EntrySnapshot, ImageResult
from domain.failures import provider_error_class
from domain.intake import AskNext, Complete, IntakeState
from domain.providers import AnalysisProvider, ImageProvider, IntakeProvider
from domain.vocabulary import VisualizationStyle
from workers.observability import metrics

T = TypeVar("T")


def _counted(model: str, call: Callable[[], T]) -> T:
    try:
        return call()
    except Exception as exc:
        metrics.count_provider_error(model, provider_error_class(exc))
        raise


class CountedAnalysis:
    def __init__(self, inner: AnalysisProvider, model: str) -> None:
        self.inner, self.model, self.name = inner, model, inner.name

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        return _counted(self.model, lambda: self.inner.analyse(entry, style))


class CountedImages:
    def __init__(self, inner: ImageProvider, model: str) -> None:
        self.inner, self.model, self.name = inner, model, inner.name

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        return _counted(self.model, lambda: self.inner.draw(entry, analysis, style))


class CountedIntake:
    def __init__(self, inner: IntakeProvider, model: str) -> None:
        self.inner, self.model, self.name = inner, model, inner.name

    def next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        return _counted(self.model, lambda: self.inner.next_turn(state))
