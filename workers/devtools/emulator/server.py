"""The emulator's HTTP server: the generateContent route and the control API."""

from __future__ import annotations

import base64
import json
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from workers.devtools.emulator.content import (
    emulated_png,
    error_body,
    example_from_schema,
    request_text,
)
from workers.devtools.emulator.state import QUOTA_METRIC, ROUTE, EmulatorState, Fault


class EmulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: EmulatorServer

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet; stats are available at /_emulator/stats

    # --- plumbing -------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        # Headers and body in separate segments + Nagle + delayed ACK = a 40 ms stall
        # per keep-alive request; a real API answers without it.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _send(self, code: int, payload: Any, content_type: str = "application/json") -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        return json.loads(raw or b"{}")

    # --- control API ----------------------------------------------------------------

    def do_GET(self) -> None:
        url = urlparse(self.path)
        state = self.server.state
        if url.path == "/_emulator/stats":
            query = parse_qs(url.query)
            contains = query.get("contains", [None])[0]
            since = float(query.get("since", ["-inf"])[0])
            until = float(query.get("until", ["inf"])[0])
            with state.lock:
                calls = [
                    c
                    for c in state.calls
                    if (not contains or contains in c["text"]) and since <= c["at"] < until
                ]
            counts: dict[str, int] = {}
            for call in calls:
                counts[call["kind"]] = counts.get(call["kind"], 0) + 1
            self._send(
                200,
                {
                    "counts": counts,
                    "total": len(calls),
                    "kinds": call_summary(calls),
                    "listeners": {
                        label: call_summary([c for c in calls if c["via"] == label])
                        for label in sorted({c["via"] for c in calls})
                    },
                    "calls": [{k: v for k, v in c.items() if k != "text"} for c in calls[-200:]],
                },
            )
        elif url.path == "/_emulator/health":
            self._send(200, {"ok": True})
        else:
            self._send(404, error_body(404, "NOT_FOUND", f"no route {url.path}"))

    def do_POST(self) -> None:
        url = urlparse(self.path)
        state = self.server.state
        try:
            body = self._body()
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._send(400, error_body(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
            return
        if url.path == "/_emulator/faults":
            with state.lock:
                state.faults.extend(Fault(**f) for f in body.get("faults", []))
            self._send(200, {"queued": len(state.faults)})
            return
        if url.path == "/_emulator/config":
            with state.lock:
                for key, value in body.items():
                    if key == "retired_models":
                        value = set(value)
                    setattr(state, key, value)
            self._send(200, {"ok": True})
            return
        if url.path == "/_emulator/reset":
            with state.lock:
                state.faults.clear()
                state.calls.clear()
                state.clear_windows()
            self._send(200, {"ok": True})
            return
        match = ROUTE.match(url.path)
        if not match:
            self._send(
                404, error_body(404, "NOT_FOUND", f"The requested URL {url.path} was not found.")
            )
            return
        self._generate(match.group(2), url, body)

    # --- generateContent ------------------------------------------------------------

    def _generate(self, model: str, url: Any, body: dict[str, Any]) -> None:
        state = self.server.state
        key = self.headers.get("x-goog-api-key") or parse_qs(url.query).get("key", [None])[0]
        if not key:
            self._send(
                403,
                error_body(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers."),
            )
            return
        if key != state.api_key:
            self._send(
                400,
                error_body(
                    400,
                    "INVALID_ARGUMENT",
                    "API key not valid. Please pass a valid API key.",
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                        }
                    ],
                ),
            )
            return
        if model in state.retired_models:
            self._send(
                404,
                error_body(
                    404, "NOT_FOUND", f"models/{model} is not found for API version v1beta."
                ),
            )
            return
        kind = "image" if "image" in model else "analysis"
        text = request_text(body)
        arrived = time.time()
        fault = state.take_fault(kind, text)
        accepted = state.admit(kind)
        if not accepted and fault is None:
            fault = Fault(kind="429")
        with state.lock:
            state.calls.append(
                {
                    "kind": kind,
                    "model": model,
                    "at": arrived,
                    "text": text,
                    "via": self.server.label,
                    "accepted": accepted,
                    "answered_429": fault is not None and fault.kind == "429",
                    "refused": fault is not None and fault.kind in REFUSED,
                }
            )
        time.sleep(state.latency_image_s if kind == "image" else state.latency_analysis_s)
        if fault is not None and self._hostile(fault, key, model, text, body):
            return
        if fault is not None and self._fault(fault, kind, model):
            return
        if kind == "image":
            self._send(
                200,
                self._image_answer(
                    model, text, bad=fault is not None and fault.kind == "bad_image"
                ),
            )
        else:
            self._send(200, self._analysis_answer(model, text, body))

    def _fault(self, fault: Fault, kind: str, model: str) -> bool:
        """Answer with the fault; False when the fault only delays (slow)."""
        simple = {
            "400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
            "403": (403, "PERMISSION_DENIED", "Permission denied."),
            "404": (404, "NOT_FOUND", f"models/{model} is not found."),
            "500": (500, "INTERNAL", "An internal error has occurred."),
            "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
            "504": (504, "DEADLINE_EXCEEDED", "The request timed out."),
        }
        state = self.server.state
        if fault.kind in simple:
            code, status, message = simple[fault.kind]
            self._send(code, error_body(code, status, message))
        elif fault.kind == "429":
            self._send(
                429,
                error_body(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "You exceeded your current quota.",
                    [
                        {
                            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [
                                {
                                    "quotaMetric": QUOTA_METRIC,
                                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel",
                                }
                            ],
                        },
                        {
                            "@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": f"{fault.seconds or state.retry_delay_s:g}s",
                        },
                    ],
                ),
            )
        elif fault.kind == "502html":
            self._send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html")
        elif fault.kind in ("timeout", "slow"):
            time.sleep(fault.seconds or 5.0)
            if fault.kind == "timeout":
                self._send(504, error_body(504, "DEADLINE_EXCEEDED", "late answer"))
                return True
            return False
        elif fault.kind == "block_prompt":
            self._send(
                200,
                {
                    "promptFeedback": {"blockReason": "SAFETY"},
                    "usageMetadata": {"promptTokenCount": 12},
                },
            )
        elif fault.kind in ("safety", "image_safety"):
            reason = "SAFETY" if fault.kind == "safety" else "IMAGE_SAFETY"
            self._send(
                200,
                {
                    "candidates": [{"finishReason": reason, "index": 0}],
                    "usageMetadata": {"promptTokenCount": 100, "totalTokenCount": 100},
                    "modelVersion": model,
                },
            )
        elif fault.kind == "max_tokens":
            self._send(
                200, self._text_candidate(model, '{"summary": "cut off in the mid', "MAX_TOKENS")
            )
        elif fault.kind == "malformed_json":
            self._send(
                200, self._text_candidate(model, "Sure! Here is the analysis: {not json", "STOP")
            )
        elif fault.kind == "text_only":
            self._send(
                200,
                self._text_candidate(
                    model, "I can't draw that, but here is a description.", "STOP"
                ),
            )
        else:
            return False  # bad_image is handled by the normal image answer
        return True

    def _hostile(self, fault: Fault, key: str, model: str, text: str, body: dict[str, Any]) -> bool:
        """The hostile fault kinds (see the module docstring); False for the others."""
        if fault.kind.startswith("echo_key_"):
            code = int(fault.kind.rsplit("_", 1)[1])
            status = "INVALID_ARGUMENT" if code == 400 else "INTERNAL"
            echoed = f"Request POST /v1beta/models/{model}:generateContent?key={key} failed"
            self._send(code, error_body(code, status, f"{echoed}: backend error."))
            return True
        if fault.kind not in ("nul_text", "surrogate_text", "raw_nul", "key_in_text"):
            return False
        answer = self._analysis_answer(model, text, body)
        part = answer["candidates"][0]["content"]["parts"][0]
        data = json.loads(part["text"])
        first = next(k for k, v in data.items() if isinstance(v, str) and k != "action")
        if fault.kind == "nul_text":
            data[first] = "\u202eNUL\x00here\u200f " + data[first]
            part["text"] = json.dumps(data)
        elif fault.kind == "surrogate_text":
            data[first] = "lone \ud800 surrogate " + data[first]
            part["text"] = json.dumps(data)
        elif fault.kind == "key_in_text":
            data[first] = f"Calling with ?key={key} and {key}: " + data[first]
            part["text"] = json.dumps(data)
        else:
            part["text"] = json.dumps(data).replace('": "', '": "\x00', 1)
        self._send(200, answer)
        return True

    @staticmethod
    def _text_candidate(
        model: str, text: str, finish: str, prompt_tokens: int = 100
    ) -> dict[str, Any]:
        output_tokens = tokens(text)
        return {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": finish,
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": prompt_tokens,
                "candidatesTokenCount": output_tokens,
                "totalTokenCount": prompt_tokens + output_tokens,
            },
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:20],
        }

    def _analysis_answer(self, model: str, text: str, body: dict[str, Any]) -> dict[str, Any]:
        config = body.get("generationConfig", {})
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        # Echo the end of the request (where the caller's own text usually is), so the
        # answer, and any prompt built from it, is traceable to the request.
        hint = " ".join(text.split())[-120:]
        answer = (
            json.dumps(example_from_schema(schema, hint, request=text))
            if schema
            else f"Emulated answer to: {hint}"
        )
        return self._text_candidate(model, answer, "STOP", prompt_tokens(body))

    def _image_answer(self, model: str, text: str, *, bad: bool) -> dict[str, Any]:
        data = (
            b"\x89PNG\r\n\x1a\nnot really a png"
            if bad
            else emulated_png(text, self.server.state.image_px)
        )
        return {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {
                                "inlineData": {
                                    "mimeType": "image/png",
                                    "data": base64.b64encode(data).decode(),
                                }
                            }
                        ],
                    },
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            # An image answer is billed as 1290 output tokens (a 1K image).
            "usageMetadata": {
                "promptTokenCount": tokens(text),
                "candidatesTokenCount": IMAGE_TOKENS,
                "totalTokenCount": tokens(text) + IMAGE_TOKENS,
            },
            "modelVersion": model,
            "responseId": uuid.uuid4().hex[:20],
        }


IMAGE_TOKENS = 1290
# Faults answered with a 4xx other than 429: the API refused the request, not run.
REFUSED = {"400", "403", "404", "echo_key_400"}


def tokens(text: str) -> int:
    """About four characters a token, as the API's tokenizer roughly counts English."""
    return max(1, len(text) // 4)


def prompt_tokens(body: dict[str, Any]) -> int:
    """The request's input tokens: its contents and its system instruction."""
    system = body.get("systemInstruction") or body.get("system_instruction") or {}
    parts = system.get("parts", []) if isinstance(system, dict) else []
    said = "".join(p.get("text", "") for p in parts if isinstance(p, dict))
    return tokens(request_text(body) + said)


def call_summary(calls: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per kind: calls seen, calls the quotas counted, 429s answered, paid calls (run by
    the API: counted, not answered with a 4xx; what the paid-call ledger records, retries
    and 5xx answers included: domain/ledger.py), and when the first and last counted
    call arrived (epoch seconds)."""
    summary: dict[str, dict[str, Any]] = {}
    for call in calls:
        kind = summary.setdefault(
            call["kind"],
            {
                "calls": 0,
                "accepted": 0,
                "rate_limited": 0,
                "paid": 0,
                "first_accepted_at": None,
                "last_accepted_at": None,
            },
        )
        kind["calls"] += 1
        kind["rate_limited"] += call["answered_429"]
        if call["accepted"] and not call["answered_429"] and not call.get("refused"):
            kind["paid"] += 1
        if call["accepted"]:
            kind["accepted"] += 1
            at = call["at"]
            kind["first_accepted_at"] = min(kind["first_accepted_at"] or at, at)
            kind["last_accepted_at"] = max(kind["last_accepted_at"] or at, at)
    return summary


class EmulatorServer(ThreadingHTTPServer):
    """``label`` marks the calls this listener received: two listeners sharing one state
    tell apart two groups of callers (stats: "listeners")."""

    daemon_threads = True
    request_queue_size = 512

    def __init__(self, address: tuple[str, int], state: EmulatorState, label: str = "") -> None:
        super().__init__(address, EmulatorHandler)
        self.state = state
        self.label = label

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that hangs up mid-answer (a killed worker, a timeout) is routine,
        not a traceback on stderr; anything else is still reported."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


def start_in_thread(
    state: EmulatorState | None = None, port: int = 0, label: str = ""
) -> EmulatorServer:
    server = EmulatorServer(("127.0.0.1", port), state or EmulatorState(), label)
    threading.Thread(target=server.serve_forever, name="gemini-emulator", daemon=True).start()
    return server
