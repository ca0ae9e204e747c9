"""Generate the JSON Schemas of the broker messages for non-Python producers."""

from __future__ import annotations

import json
from pathlib import Path

from domain.messages import ALL_MESSAGES

# What the envelope's ``options`` may carry besides Dramatiq's own (docs/messages.md):
# the W3C trace context (workers/observability/tracing.py). Optional; one that is
# malformed is ignored, never a reason to refuse the message.
ENVELOPE_OPTIONS = {
    "trace_context": {
        "type": "object",
        "description": (
            "Optional W3C Trace Context of the publish (traceparent, tracestate): the "
            "worker's spans join the producer's trace. Ignored, with a log line, when "
            "malformed."
        ),
        "properties": {
            "traceparent": {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            },
            "tracestate": {"type": "string", "maxLength": 512},
        },
        "maxProperties": 4,
        "additionalProperties": {"type": "string", "maxLength": 512},
    }
}


def schema_documents() -> dict[str, str]:
    documents = {}
    for model in ALL_MESSAGES:
        schema = model.model_json_schema()
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = f"{model.actor_name} v1"
        schema["x-actor-name"] = model.actor_name
        schema["x-queue-name"] = model.queue_name
        schema["x-envelope-options"] = ENVELOPE_OPTIONS
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
