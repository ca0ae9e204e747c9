"""The published JSON Schemas are the ones the code validates with."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.devtools.schemas_export import schema_documents

pytestmark = pytest.mark.unit
DOCS = Path(__file__).resolve().parents[2] / "docs" / "messages"


def test_checked_in_schemas_are_current() -> None:
    documents = schema_documents()
    assert set(documents) == {p.name for p in DOCS.glob("*.schema.json")}
    for name, text in documents.items():
        assert (DOCS / name).read_text() == text, f"{name} is stale: run 'emotionviz schemas'"


def test_entry_created_schema_names_its_contract() -> None:
    import json

    schema = json.loads(schema_documents()["entry.created.v1.schema.json"])
    assert schema["required"] == ["entry_id", "user_id"]
    assert schema["additionalProperties"] is False
    assert schema["x-queue-name"] == "visualizations"
