"""A local emulator of the two Gemini endpoints we use, speaking their wire format.

POST /{v1,v1beta}/models/{model}:generateContent with x-goog-api-key (or ?key=).
A model whose id contains "image" answers with an inline PNG; any other answers JSON
text built from the request's responseJsonSchema. Configurable latency per kind,
per-minute quotas (over all calls, and per kind: exact 60 s sliding windows of arrivals)
answering 429 with QuotaFailure and RetryInfo, retired models (404), and faults on
demand, queued through the control API:

  POST /_emulator/faults  {"faults": [{"kind": "503", "target": "image",
                                       "contains": "some prompt text", "times": 1}]}
  POST /_emulator/config  {"latency_analysis_s": 1, "latency_image_s": 4,
                           "quota_per_minute": 0, "quota_image_per_minute": 300, ...}
  POST /_emulator/reset   GET /_emulator/stats[?contains=TEXT&since=EPOCH&until=EPOCH]

The stats count, per kind ("kinds") and per listener ("listeners"), the calls seen, the
calls the quotas accepted, the 429s answered and the paid calls (accepted, not
answered with a 4xx: what the paid-call ledger records), among calls that arrived in
[since, until).

Fault kinds: 400, 403, 404, 429, 500, 503, 504, 502html, timeout, slow, block_prompt,
safety, image_safety, max_tokens, text_only, malformed_json, bad_image; hostile ones:
nul_text (valid JSON whose text holds \u0000 and RTL marks), surrogate_text (a lone
surrogate, \ud800),
raw_nul (a raw NUL inside the JSON text: invalid JSON), key_in_text (the answer quotes
the caller's API key), echo_key_400 / echo_key_500 (an error text echoing the request
URL with ``?key=``).
"""

from workers.devtools.emulator.content import emulated_png, example_from_schema
from workers.devtools.emulator.server import EmulatorHandler, EmulatorServer, start_in_thread
from workers.devtools.emulator.state import QUOTA_METRIC, EmulatorState, Fault

__all__ = [
    "QUOTA_METRIC",
    "EmulatorHandler",
    "EmulatorServer",
    "EmulatorState",
    "Fault",
    "emulated_png",
    "example_from_schema",
    "start_in_thread",
]
