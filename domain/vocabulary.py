"""The emotion vocabulary and the enums, defined once.

The database CHECK constraints, the ORM validators and the pydantic schemas all read
these tuples, so adding an emotion is one edit here plus one migration.
"""

from __future__ import annotations

from enum import StrEnum

EMOTIONS: tuple[str, ...] = (
    "joy",
    "sadness",
    "anger",
    "fear",
    "disgust",
    "surprise",
    "anxiety",
    "contentment",
    "frustration",
    "excitement",
)


class VisualizationStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"


class VisualizationStyle(StrEnum):
    ABSTRACT = "abstract"
    DIAGRAM = "diagram"
    METAPHOR = "metaphor"


class EntrySource(StrEnum):
    MANUAL = "manual"
    INTAKE_FLOW = "intake_flow"
    IMPORT = "import"


def invalid_emotions(emotions: list[str] | tuple[str, ...]) -> list[str]:
    """Return the emotions that are not in the vocabulary, in input order."""
    return [emotion for emotion in emotions if emotion not in EMOTIONS]


def sql_text_array(values: tuple[str, ...] | list[str]) -> str:
    """Render values as a PostgreSQL text[] literal for CHECK constraints."""
    quoted = ", ".join("'" + value.replace("'", "''") + "'" for value in values)
    return f"ARRAY[{quoted}]::text[]"
