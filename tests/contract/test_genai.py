"""Contract tests: the google-genai SDK paths our provider uses (workers/providers/
gemini.py) through its public API only. scripts/upgrade_check runs them on the newest
release."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.genai import types

from workers.providers.gemini import _raw, warm_up_sdk

pytestmark = [pytest.mark.contract]

ROOT = Path(__file__).resolve().parents[2]


def test_the_warm_up_call_runs_offline_through_the_public_client() -> None:
    """generate_content on an HTTP transport we hand the client (client_args), parsed
    into the public response types: in a fresh interpreter, whose lazily built
    validators the call must build."""
    probe = (
        "from google.genai import types\n"
        "from workers.providers.gemini import warm_up_sdk\n"
        "warm_up_sdk()\n"
        "print(type(types.GenerateContentResponse.__pydantic_validator__).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["SchemaValidator"]
    warm_up_sdk()  # and here, on whatever this interpreter built already


def test_a_response_is_built_from_the_apis_json_with_the_public_constructor() -> None:
    response = types.GenerateContentResponse.model_validate(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": '{"a": 1}'},
                            {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                        ],
                    },
                    "finishReason": "STOP",
                }
            ],
        }
    )
    parts = response.candidates[0].content.parts  # type: ignore[index, union-attr]
    assert parts is not None and parts[0].text == '{"a": 1}'
    assert parts[1].inline_data is not None and parts[1].inline_data.data == b"\x89PNG\r\n\x1a\n"
    stored = _raw(response)
    assert stored["candidates"][0]["content"]["parts"][1]["inline_data"]["data"] == (
        "<8 bytes omitted>"
    )
