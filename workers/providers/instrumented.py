"""Providers wrapped to count their failures by class (the errors-by-class metric):
429s, 5xx, timeouts, safety blocks, unusable output. Durations are measured closer to
the wire, in the Gemini client, so they leave out our rate limiter's wait.

With a ledger (issue 23.3), each wrapped call first checks its person's daily budget
(BudgetExceededError: the work waits for the next UTC day), then records every attempt
the client reports, each in its own row right after it (paid_calls.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from domain.analysis import Analysis, AnalysisResult, EntrySnapshot, ImageResult
from domain.failures import provider_error_class
from domain.intake import AskNext, Complete, IntakeState
from domain.ledger import CallKind, CallOwner, Ledger
from domain.providers import AnalysisProvider, ImageProvider, IntakeProvider
from domain.vocabulary import VisualizationStyle
from workers.observability import metrics
from workers.providers.paid_calls import current_owner, recording

T = TypeVar("T")


def _counted(
    model: str, call: Callable[[], T], ledger: Ledger | None, kind: CallKind, owner: CallOwner
) -> T:
    if ledger is not None:
        ledger.check_budget(owner)  # a wait of ours, not the API's error: not counted
    try:
        with recording(ledger, kind, owner):
            return call()
    except Exception as exc:
        metrics.count_provider_error(model, provider_error_class(exc))
        raise


class CountedAnalysis:
    def __init__(self, inner: AnalysisProvider, model: str, ledger: Ledger | None = None) -> None:
        self.inner, self.model, self.name, self.ledger = inner, model, inner.name, ledger

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        owner = current_owner(entry.entry_id)
        return _counted(
            self.model, lambda: self.inner.analyse(entry, style), self.ledger, "analysis", owner
        )


class CountedImages:
    def __init__(self, inner: ImageProvider, model: str, ledger: Ledger | None = None) -> None:
        self.inner, self.model, self.name, self.ledger = inner, model, inner.name, ledger

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        owner = current_owner(entry.entry_id)
        return _counted(
            self.model,
            lambda: self.inner.draw(entry, analysis, style),
            self.ledger,
            "image",
            owner,
        )


class CountedIntake:
    def __init__(self, inner: IntakeProvider, model: str, ledger: Ledger | None = None) -> None:
        self.inner, self.model, self.name, self.ledger = inner, model, inner.name, ledger

    def next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        owner = current_owner()
        return _counted(
            self.model, lambda: self.inner.next_turn(state), self.ledger, "intake", owner
        )
