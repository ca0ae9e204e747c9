"""Providers wrapped in a span per model call (tracing on; docs/monitoring.md).

Each wraps the adapter itself (providers/factory.py), under the counting wrapper, so a
call's span holds the rate gate's wait and the client's own retries; it hands any other
attribute to the adapter (its gate, its client), as if it were not there. Its attributes are
the operation, the model, the provider, the entry's id and the outcome (``ok``, or the
failure's class as the errors-by-class metric names it): never the entry's text nor the
model's answer. Off, a call costs one read of a module global more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from domain.analysis import Analysis, AnalysisResult, EntrySnapshot, ImageResult
from domain.failures import provider_error_class
from domain.intake import AskNext, Complete, IntakeState
from domain.providers import AnalysisProvider, ImageProvider, IntakeProvider
from domain.vocabulary import VisualizationStyle
from workers.observability import tracing

T = TypeVar("T")


def _traced(
    operation: str,
    model: str,
    provider: str,
    call: Callable[[], T],
    *,
    ids: Mapping[str, str] | None = None,
    step: int | None = None,
) -> T:
    from opentelemetry.trace import SpanKind

    attributes: dict[str, str | int] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
        "emotionviz.provider": provider,
        **tracing.refs(ids or {}),
    }
    if step is not None:
        attributes["emotionviz.step"] = step
    with tracing.tracer().start_as_current_span(
        f"{operation} {model}",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as opened:
        try:
            result = call()
        except BaseException as exc:  # a time limit (a BaseException) ends it too
            kind = provider_error_class(exc) if isinstance(exc, Exception) else type(exc).__name__
            opened.set_attribute("emotionviz.outcome", kind)
            tracing.failed(opened, exc, kind)
            raise
        opened.set_attribute("emotionviz.outcome", "ok")
        return result


def _model(inner: object) -> str:
    """The model an adapter calls (the offline ones have none: their name)."""
    return str(getattr(inner, "model", getattr(inner, "name", "?")))


class _Transparent:
    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None:  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(inner, name)


class TracedAnalysis(_Transparent):
    def __init__(self, inner: AnalysisProvider) -> None:
        self.inner, self.model, self.name = inner, _model(inner), inner.name

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        if tracing.tracer() is None:
            return self.inner.analyse(entry, style)
        return _traced(
            "analysis",
            self.model,
            self.name,
            lambda: self.inner.analyse(entry, style),
            ids={"entry_id": entry.entry_id},
        )


class TracedImages(_Transparent):
    def __init__(self, inner: ImageProvider) -> None:
        self.inner, self.model, self.name = inner, _model(inner), inner.name

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        if tracing.tracer() is None:
            return self.inner.draw(entry, analysis, style)
        return _traced(
            "image",
            self.model,
            self.name,
            lambda: self.inner.draw(entry, analysis, style),
            ids={"entry_id": entry.entry_id},
        )


class TracedIntake(_Transparent):
    def __init__(self, inner: IntakeProvider) -> None:
        self.inner, self.model, self.name = inner, _model(inner), inner.name

    def next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        if tracing.tracer() is None:
            return self.inner.next_turn(state)
        return _traced(
            "intake",
            self.model,
            self.name,
            lambda: self.inner.next_turn(state),
            step=state.step,
        )


class _HasModels(Protocol):
    @property
    def analysis(self) -> AnalysisProvider: ...

    @property
    def images(self) -> ImageProvider: ...

    @property
    def intake(self) -> IntakeProvider: ...


P = TypeVar("P", bound=_HasModels)


def traced(providers: P) -> P:
    """The same providers, each model call in a span (a dataclass, such as Providers)."""
    return dataclasses.replace(  # type: ignore[type-var]
        providers,
        analysis=TracedAnalysis(providers.analysis),
        images=TracedImages(providers.images),
        intake=TracedIntake(providers.intake),
    )
