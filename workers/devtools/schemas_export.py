"""Generate the JSON Schemas of the broker messages for non-Python producers."""

from __future__ import annotations

import json
from pathlib import Path

from domain.messages import ALL_MESSAGES


def schema_documents() -> dict[str, str]:
    documents = {}
    for model in ALL_MESSAGES:
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"{model.actor_name} v1"
        schema["x-actor-name"] = model.actor_name
        schema["x-queue-name"] = model.queue_name
        documents[f"{model.actor_name}.v1.schema.json"] = json.dumps(schema, indent=2) + "\n"
    return documents


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schema_documents().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
