"""The provider protocols the application services depend on.

Adapters live in workers/providers/: ``local`` (offline, deterministic) and ``gemini``
(the google-genai SDK, also pointed at our emulator in tests).
"""

from __future__ import annotations

from typing import Any, Protocol

from domain.analysis import Analysis, AnalysisResult, EntrySnapshot, ImageResult
from domain.intake import AskNext, Complete, IntakeState
from domain.vocabulary import VisualizationStyle


class AnalysisProvider(Protocol):
    name: str

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        """Read an entry; raise TransientError or PermanentError subclasses on failure."""
        ...


class ImageProvider(Protocol):
    name: str

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        """Draw the entry; return encoded image bytes and the raw response sans bytes."""
        ...


class ImageStore(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store bytes under ``key`` and return the public URL."""
        ...

    def get(self, key: str) -> bytes: ...


class IntakeProvider(Protocol):
    name: str

    def next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        """The next question, or the completion (forced when ``state.must_complete``),
        with the raw response for ai_context. Raises our error types on failure."""
        ...
