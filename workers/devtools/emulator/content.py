"""What the emulator answers with: JSON built from a response schema, a PNG per prompt,
error bodies in the API's format."""

from __future__ import annotations

import hashlib
import io
from typing import Any

from PIL import Image, ImageDraw


def _pick_enum(values: list[Any], request: str) -> Any:
    """The value the request names last in double quotes (a prompt that says 'set
    "action" to "complete"' gets "complete"); else the first."""
    named = [(request.rfind(f'"{v}"'), i) for i, v in enumerate(values)]
    position, index = max(named)
    return values[index] if position >= 0 else values[0]


def example_from_schema(
    schema: dict[str, Any], hint: str, path: str = "", request: str = ""
) -> Any:
    """A valid instance of a (plain JSON or Google OpenAPI-subset) schema."""
    kind = str(schema.get("type", "object")).lower()
    if "enum" in schema:
        return _pick_enum(list(schema["enum"]), request)
    if "anyOf" in schema:
        return example_from_schema(schema["anyOf"][0], hint, path, request)
    if kind == "object":
        props = schema.get("properties", {})
        return {
            name: example_from_schema(sub, hint, f"{path}.{name}", request)
            for name, sub in props.items()
        }
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 2)
        count = min(count, int(schema.get("maxItems", count)))
        return [
            example_from_schema(schema.get("items", {}), hint, f"{path}[{i}]", request)
            for i in range(count)
        ]
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    text = f"emulated {path.strip('.') or 'value'} for: {hint}"
    return text[: int(schema.get("maxLength", 200))]


_PNG_CACHE: dict[tuple[int, int], bytes] = {}


def emulated_png(prompt: str, size: int) -> bytes:
    """A small real PNG whose colours depend on the prompt (cached per colour)."""
    digest = hashlib.sha256(prompt.encode()).digest()
    key = (digest[0] % 16, size)
    if key not in _PNG_CACHE:
        hue = key[0] * 16
        image = Image.new("RGB", (size, size), (hue, 90, 200 - hue // 2))
        draw = ImageDraw.Draw(image)
        for i in range(8):
            r = size * (8 - i) / 16
            draw.ellipse(
                (size / 2 - r, size / 2 - r, size / 2 + r, size / 2 + r),
                fill=((hue + i * 20) % 256, 120 + i * 10, 230 - i * 15),
            )
        out = io.BytesIO()
        image.save(out, format="PNG")
        _PNG_CACHE[key] = out.getvalue()
    return _PNG_CACHE[key]


def error_body(
    code: int, status: str, message: str, details: list[Any] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": details or []}}


def request_text(body: dict[str, Any]) -> str:
    contents = body.get("contents", [])
    if isinstance(contents, dict):
        contents = [contents]
    texts = [
        part.get("text", "")
        for c in contents
        for part in c.get("parts", [])
        if isinstance(part, dict)
    ]
    return "\n".join(texts)
