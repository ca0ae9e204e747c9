"""Validate image bytes from a provider and make the thumbnail (Pillow)."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from domain.errors import InvalidImageError

ALLOWED_FORMATS = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
}


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    extension: str
    mime_type: str
    width: int
    height: int


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Decode fully (not only the header) so a truncated file is caught here."""
    if not data:
        raise InvalidImageError("the image model returned no image bytes")
    if len(data) > max_bytes:
        raise InvalidImageError(f"image is {len(data)} bytes, over the {max_bytes} byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or ""
                width, height = probe.size
                if width * height > max_pixels:
                    raise InvalidImageError(
                        f"image is {width}x{height}, over the {max_pixels} pixel limit"
                    )
                probe.load()
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombWarning) as exc:
        raise InvalidImageError(f"image bytes are not a decodable image: {exc}") from None
    if fmt not in ALLOWED_FORMATS:
        raise InvalidImageError(f"image format {fmt or 'unknown'} is not PNG, JPEG or WebP")
    extension, mime = ALLOWED_FORMATS[fmt]
    return CheckedImage(data, extension, mime, width, height)


def thumbnail(data: bytes, size_px: int) -> bytes:
    """A WebP thumbnail that fits in size_px x size_px, aspect ratio kept."""
    with Image.open(io.BytesIO(data)) as image:
        rgb = image.convert("RGB")
        rgb.thumbnail((size_px, size_px), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        rgb.save(out, format="WEBP", quality=82, method=2)  # 2x faster than 4, ~same size
        return out.getvalue()


def warm_up() -> None:
    """Check and thumbnail a tiny picture now (a worker at boot): Pillow loads its format
    plugins and the WebP encoder on first use, ~55 ms the first entry would pay."""
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (128, 96, 64)).save(png, format="PNG")
    image = check_image(png.getvalue(), max_bytes=2**20, max_pixels=2**20)
    thumbnail(image.data, 4)
