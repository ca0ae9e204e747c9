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
    """Where pictures live (workers/providers: a local folder or an S3 bucket). Keys are
    made from row ids, so a retried job overwrites its own objects."""

    def put(self, key: str, data: bytes, content_type: str) -> str:
        """Store bytes under ``key`` (atomically, overwriting) and return the URL to
        keep in the row."""
        ...

    def get(self, key: str) -> bytes:
        """The stored bytes; FileNotFoundError when there are none."""
        ...

    def delete(self, key: str) -> bool:
        """Remove one object; False when there was none."""
        ...

    def stored(self, prefix: str) -> list[tuple[str, float]]:
        """Every key under ``prefix/`` with its age in seconds."""
        ...

    def key_for_url(self, url: str) -> str | None:
        """The key behind a URL this store returned, or None for any other URL."""
        ...

    def reader_url(self, url: str) -> str | None:
        """A URL a reader can fetch now for a URL this store returned (presigned where
        the store is private), or None for any other URL."""
        ...

    def describe(self) -> str:
        """Where the pictures are, for operators (never a credential)."""
        ...


class IntakeProvider(Protocol):
    name: str

    def next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        """The next question, or the completion (forced when ``state.must_complete``),
        with the raw response for ai_context. Raises our error types on failure."""
        ...
