"""Gemini providers through the official google-genai SDK (sync client; our workers are
threads). The SDK makes one attempt; classification and waiting are ours:

- 429 -> transient, waiting RetryInfo.retryDelay (a PerDay quota waits an hour);
- 500/502/503/504, timeouts, connection errors, a non-JSON 200 -> transient;
- 400/401/403/404, blocked prompts, SAFETY-type finish reasons, unusable output after
  one repair attempt -> permanent, with a message that says what to do.

The API key is only ever handed to the SDK; error messages are built by us from the
status and the server's message, never from request objects.
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from domain.analysis import (
    SYSTEM_INSTRUCTION,
    Analysis,
    AnalysisResult,
    EntrySnapshot,
    ImageResult,
    analysis_json_schema,
    analysis_prompt,
    image_prompt,
    parse_analysis_text,
)
from domain.errors import (
    ContentBlockedError,
    InvalidModelOutputError,
    ProviderError,
    ProviderUnavailableError,
)
from domain.failures import provider_error_class
from domain.ledger import Attempt
from domain.sanitize import from_model
from domain.vocabulary import VisualizationStyle
from workers.logging import get_logger
from workers.observability import metrics
from workers.providers import paid_calls
from workers.providers.http_pools import PerThreadTransport
from workers.providers.ratelimit import RateGate

log = get_logger("emotionviz.gemini")

TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}
BLOCKING_FINISH = {
    "SAFETY",
    "RECITATION",
    "PROHIBITED_CONTENT",
    "SPII",
    "BLOCKLIST",
    "OTHER",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_OTHER",
    "NO_IMAGE",
    "IMAGE_RECITATION",
}
PER_DAY_WAIT_S = 3600.0
T = TypeVar("T")
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)s\s*$")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Timeouts and connection errors surface as the HTTP library's own exceptions."""
    found: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        found.append(module.TransportError)
    return tuple(found)


TRANSPORT_ERRORS = _transport_errors()


def retry_delay_s(details: Any) -> float | None:
    """RetryInfo.retryDelay ("26s", "47.43s") from an error body, if present."""
    error = details.get("error", details) if isinstance(details, dict) else {}
    for detail in error.get("details", []) or []:
        if isinstance(detail, dict) and detail.get("@type", "").endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _is_per_day_quota(details: Any) -> bool:
    return "PerDay" in json.dumps(details) if details else False


def classify_api_error(exc: genai_errors.APIError, *, model: str, setting: str) -> Exception:
    """Map an SDK APIError to our hierarchy, with an operator-facing message."""
    code = int(exc.code or 0)
    status = exc.status or ""
    server_message = (exc.message or "")[:300]
    if code == 429:
        delay = retry_delay_s(exc.details)
        if _is_per_day_quota(exc.details):
            delay = max(delay or 0.0, PER_DAY_WAIT_S)
            return ProviderUnavailableError(
                f"{model}: daily quota exhausted (429 {status}); waiting for the reset",
                retry_after_s=delay,
            )
        return ProviderUnavailableError(
            f"{model}: rate limited (429 {status}){f', retry in {delay:g}s' if delay else ''}",
            retry_after_s=delay,
        )
    if code in TRANSIENT_HTTP or code >= 500:
        return ProviderUnavailableError(f"{model}: server error {code} {status}: {server_message}")
    if code == 404:
        return ProviderError(
            f"model '{model}' was not found (404): it may be retired; "
            f"set {setting} to a current model id"
        )
    if code in (401, 403) or "API_KEY" in json.dumps(exc.details or {}):
        return ProviderError(
            f"{model}: the API key was rejected ({code} {status}): check GEMINI_API_KEY"
        )
    return ProviderError(f"{model}: request rejected ({code} {status}): {server_message}")


# Left out of the dump: the HTTP envelope, and the image bytes (never stored; dumping
# them as JSON base64-encoded the whole picture again, ~2 MB for a 1K image).
_NOT_STORED: dict[str, Any] = {
    "sdk_http_response": True,
    "candidates": {"__all__": {"content": {"parts": {"__all__": {"inline_data": {"data"}}}}}},
}


def _raw(response: types.GenerateContentResponse) -> dict[str, Any]:
    """The response as JSON fit to store (domain.sanitize.from_model), image bytes
    replaced by their size."""
    data = response.model_dump(mode="json", exclude_none=True, exclude=_NOT_STORED)
    for candidate, dumped in zip(
        response.candidates or [], data.get("candidates", []), strict=False
    ):
        parts = candidate.content.parts if candidate.content else None
        for part, dumped_part in zip(
            parts or [], (dumped.get("content") or {}).get("parts", []), strict=False
        ):
            if part.inline_data is not None and part.inline_data.data is not None:
                size = len(part.inline_data.data)
                dumped_part.setdefault("inline_data", {})["data"] = f"<{size} bytes omitted>"
    stored: dict[str, Any] = from_model(data)
    return stored


# What the warm-up's offline call answers: a JSON part and an image part, as a real
# response carries them (the API's JSON spelling).
_WARM_UP_ANSWER: dict[str, object] = {
    "candidates": [
        {
            "content": {
                "role": "model",
                "parts": [
                    {"text": "{}"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
                ],
            },
            "finishReason": "STOP",
        }
    ],
    "usageMetadata": {"promptTokenCount": 1, "candidatesTokenCount": 1},
}


def warm_up_sdk() -> None:
    """Build, before the first call, what the SDK and pydantic build lazily on it: the
    request's and the response's models and validators (pydantic defers them), the
    SDK's parsing path and our JSON dump. One ``generate_content`` through the SDK's
    public API, answered in process (an HTTP mock transport): no request leaves the
    process. Without it the first call of each worker process took ~90 ms more (an
    entry's whole CPU cost is ~25 ms)."""
    answer = httpx2.MockTransport(lambda _request: httpx2.Response(200, json=_WARM_UP_ANSWER))
    options = types.HttpOptions(
        base_url="http://warm-up.invalid", client_args={"transport": answer}
    )
    client = genai.Client(api_key="warm-up", http_options=options)
    try:
        response = client.models.generate_content(
            model="warm-up",
            contents=[text_turn("user", "warm-up")],
            config=types.GenerateContentConfig(
                response_mime_type="application/json",
                automatic_function_calling=NO_FUNCTION_CALLING,
            ),
        )
    finally:
        client.close()
    _raw(response)


def _check_blocked(response: types.GenerateContentResponse, model: str) -> None:
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        reason = getattr(feedback.block_reason, "value", str(feedback.block_reason))
        raise ContentBlockedError(
            f"{model}: the prompt was blocked by the safety filter ({reason})"
        )
    if not response.candidates:
        raise InvalidModelOutputError(f"{model}: the response has no candidates")
    finish = response.candidates[0].finish_reason
    finish_name = getattr(finish, "value", str(finish)) if finish is not None else "STOP"
    if finish_name in BLOCKING_FINISH:
        raise ContentBlockedError(f"{model}: the output was blocked (finish reason {finish_name})")


class GeminiClient:
    """One SDK client and one rate gate per model, shared by all threads of a process."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None,
        api_version: str,
        timeout_s: float,
    ) -> None:
        # A kept-alive connection per worker thread, each thread with a pool of its own
        # (workers/providers/http_pools.py). The HTTP library's default, one pool of 100
        # connections with 20 kept alive, capped the calls in flight and re-opened a
        # connection for most calls past 20; one shared pool sized to the threads spent
        # its CPU walking its connections on every call.
        self.transport = PerThreadTransport()
        options = types.HttpOptions(
            api_version=api_version,
            timeout=int(timeout_s * 1000),
            client_args={"transport": self.transport},
        )
        if base_url:
            options.base_url = base_url
        self._client = genai.Client(api_key=api_key, http_options=options)

    @property
    def sdk(self) -> genai.Client:
        """The SDK client every call goes through (scripts/bench times its calls)."""
        return self._client

    def generate(
        self,
        *,
        model: str,
        setting: str,
        gate: RateGate,
        contents: Any,
        config: types.GenerateContentConfig,
        parse: Callable[[types.GenerateContentResponse], T],
    ) -> T:
        """One attempt, and what ``parse`` makes of its answer. Every attempt the API
        received is reported to the ledger (paid_calls.py) with its outcome: the
        answer's usage, or the class of what went wrong (domain/ledger.py)."""
        # The request's duration is observed without the wait for our rate limiter.
        started: float | None = None
        outcome = "ok"
        failed: Attempt | None = None  # an attempt the API received that failed
        try:
            with gate.slot():
                started = time.monotonic()
                response = self._client.models.generate_content(
                    model=model, contents=contents, config=config
                )
        except genai_errors.APIError as exc:
            outcome = f"http_{exc.code}"
            error = classify_api_error(exc, model=model, setting=setting)
            if int(exc.code or 0) >= 500:  # a 4xx (a 429 too) was refused, not run
                failed = Attempt(model, outcome=provider_error_class(error))
            raise error from None
        except TRANSPORT_ERRORS as exc:
            outcome = "transport_error"
            if type(exc).__name__ not in _NOT_SENT:
                timed_out = "timeout" in type(exc).__name__.lower()
                failed = Attempt(model, outcome="timeout" if timed_out else "server_error")
            raise ProviderUnavailableError(
                f"{model}: {type(exc).__name__} talking to the API (timeout or connection)"
            ) from None
        except json.JSONDecodeError:
            outcome = "bad_body"
            failed = Attempt(model, outcome="invalid_output")
            raise ProviderUnavailableError(
                f"{model}: the API answered with a non-JSON body"
            ) from None
        finally:
            if started is not None:
                metrics.observe_request(model, time.monotonic() - started, outcome)
            if failed is not None:
                paid_calls.report(failed)
        attempt = answered(model, response)
        try:
            return parse(response)
        except Exception as exc:
            attempt.outcome = provider_error_class(exc)
            raise
        finally:
            paid_calls.report(attempt)


# Transport errors raised before the request left: the API never saw it (not paid).
_NOT_SENT = {"ConnectError", "ConnectTimeout", "PoolTimeout", "ConnectionRefusedError"}


def answered(model: str, response: types.GenerateContentResponse) -> Attempt:
    """An answered attempt: its tokens from the usage metadata (thinking tokens are
    billed as output), and whether it carries an image."""
    usage = response.usage_metadata
    output: int | None = None
    if usage is not None and (usage.candidates_token_count or usage.thoughts_token_count):
        output = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
    image = any(
        part.inline_data is not None and part.inline_data.data
        for candidate in response.candidates or []
        if candidate.content is not None
        for part in candidate.content.parts or []
    )
    return Attempt(
        model,
        input_tokens=usage.prompt_token_count if usage is not None else None,
        output_tokens=output,
        image=image,
    )


def checked_text(response: types.GenerateContentResponse, model: str) -> str | None:
    """The text of a structured answer, after the cut-off and safety checks."""
    finish = response.candidates[0].finish_reason if response.candidates else None
    if finish is not None and getattr(finish, "value", "") == "MAX_TOKENS":
        raise InvalidModelOutputError(
            f"{model}: the answer was cut off at the token limit (MAX_TOKENS)"
        )
    _check_blocked(response, model)
    return response.text


def text_turn(role: str, text: str) -> types.Content:
    return types.Content(role=role, parts=[types.Part(text=text)])


# We declare no tools. Left on (the SDK's default), automatic function calling deep-copied
# the whole config, JSON schema included, on every call.
NO_FUNCTION_CALLING = types.AutomaticFunctionCallingConfig(disable=True)


def structured_config(
    system_instruction: str, schema: dict[str, Any], temperature: float
) -> Callable[[int], types.GenerateContentConfig]:
    """JSON output against ``schema``; called with the token budget of each attempt.
    Built once per budget: the SDK only reads it."""

    @functools.cache
    def config(max_tokens: int) -> types.GenerateContentConfig:
        return types.GenerateContentConfig(
            system_instruction=system_instruction,
            temperature=temperature,
            max_output_tokens=max_tokens,
            response_mime_type="application/json",
            response_json_schema=schema,
            automatic_function_calling=NO_FUNCTION_CALLING,
        )

    return config


# Output token budgets of a structured answer: the first ask, and the one repair.
FIRST_TOKENS, REPAIR_TOKENS = 2048, 4096


def generate_with_repair(
    client: GeminiClient,
    *,
    model: str,
    setting: str,
    gate: RateGate,
    contents: list[Any],
    config: Callable[[int], types.GenerateContentConfig],
    parse: Callable[[types.GenerateContentResponse], T],
) -> T:
    """Ask for structured output; if it is unusable, ask once more, showing the model
    its answer and what was wrong with it (with a larger token budget), then give up."""
    first: list[types.GenerateContentResponse] = []

    def keep(response: types.GenerateContentResponse) -> T:
        first.append(response)
        return parse(response)

    try:
        return client.generate(
            model=model,
            setting=setting,
            gate=gate,
            contents=contents,
            config=config(FIRST_TOKENS),
            parse=keep,
        )
    except InvalidModelOutputError as first_problem:
        if not first:
            raise
        log.warning("model output unusable, asking once for a repair", reason=str(first_problem))
        repair = (
            f"That answer was unusable ({first_problem}). Reply again with complete, "
            "valid JSON matching the schema, nothing else."
        )
        retry_contents = [
            *contents,
            text_turn("model", first[0].text or ""),
            text_turn("user", repair),
        ]
    try:
        return client.generate(
            model=model,
            setting=setting,
            gate=gate,
            contents=retry_contents,
            config=config(REPAIR_TOKENS),
            parse=parse,
        )
    except InvalidModelOutputError as exc:
        raise InvalidModelOutputError(f"{exc} (after one repair attempt)") from None


class GeminiAnalysisProvider:
    name = "gemini"

    def __init__(self, client: GeminiClient, model: str, gate: RateGate) -> None:
        self.client, self.model, self.gate = client, model, gate
        self.config = structured_config(SYSTEM_INSTRUCTION, analysis_json_schema(), 0.7)

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        prompt = analysis_prompt(entry, style)
        return generate_with_repair(
            self.client,
            model=self.model,
            setting="ANALYSIS_MODEL",
            gate=self.gate,
            contents=[text_turn("user", prompt)],
            config=self.config,
            parse=self.parse,
        )

    def parse(self, response: types.GenerateContentResponse) -> AnalysisResult:
        """The analysis in an answer (raises InvalidModelOutputError if unusable)."""
        analysis: Analysis = parse_analysis_text(checked_text(response, self.model))
        raw = {"provider": self.name, "model": self.model, "response": _raw(response)}
        return AnalysisResult(analysis=analysis, raw_response=raw)


class GeminiImageProvider:
    name = "gemini"

    def __init__(
        self,
        client: GeminiClient,
        model: str,
        gate: RateGate,
        *,
        aspect_ratio: str,
        image_size: str,
    ) -> None:
        self.client, self.model, self.gate = client, model, gate
        # No response schema for an image model: it rejects one.
        self.config = types.GenerateContentConfig(
            response_modalities=["IMAGE"],
            image_config=types.ImageConfig(aspect_ratio=aspect_ratio, image_size=image_size),
            automatic_function_calling=NO_FUNCTION_CALLING,
        )

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        return self.client.generate(
            model=self.model,
            setting="IMAGE_MODEL",
            gate=self.gate,
            contents=image_prompt(analysis, style),
            config=self.config,
            parse=self.parse,
        )

    def parse(self, response: types.GenerateContentResponse) -> ImageResult:
        """The picture in an answer (raises if blocked or if there is none)."""
        _check_blocked(response, self.model)
        content = response.candidates[0].content if response.candidates else None
        for part in (content.parts or []) if content else []:
            if part.inline_data is not None and part.inline_data.data:
                return ImageResult(
                    data=part.inline_data.data,
                    mime_type=part.inline_data.mime_type or "application/octet-stream",
                    raw_response={
                        "provider": self.name,
                        "model": self.model,
                        "response": _raw(response),
                    },
                )
        said = (response.text or "").strip()[:200]
        raise InvalidModelOutputError(
            f"{self.model}: no image in the answer (text only{f': {said!r}' if said else ''})"
        )
