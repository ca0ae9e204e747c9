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
# Only these decoders ever see untrusted bytes: Pillow's open() otherwise tries each of
# its ~40 format plugins in turn (GIF, TIFF, ICO, PSD ...), the wider attack surface.
OPEN_FORMATS = tuple(ALLOWED_FORMATS)
# Magic numbers, only to name what was refused (no decoder runs on them).
_SIGNATURES = (
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"8BPS", "PSD"),
    (b"%PDF", "PDF"),
    (b"<svg", "SVG"),
    (b"<?xml", "XML"),
)


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    extension: str
    mime_type: str
    width: int
    height: int


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """PNG, JPEG or WebP within the limits, or InvalidImageError (permanent).

    The size in bytes is checked first, then the format and the pixel count from the
    header alone; only then is the image decoded in full (so a truncated file is
    caught here, not when the thumbnail is made)."""
    if not data:
        raise InvalidImageError("the image model returned no image bytes")
    if len(data) > max_bytes:
        raise InvalidImageError(
            f"invalid image: {len(data)} bytes, over the {max_bytes} byte limit"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=OPEN_FORMATS) as probe:
                fmt = probe.format or ""
                if fmt not in ALLOWED_FORMATS:  # e.g. MPO, a JPEG plugin's variant
                    raise InvalidImageError(f"invalid image: format {fmt} is not PNG, JPEG or WebP")
                width, height = probe.size
                if width * height > max_pixels:
                    raise InvalidImageError(
                        f"invalid image: {width}x{height}, over the {max_pixels} pixel limit"
                    )
                probe.load()
    except UnidentifiedImageError:
        raise InvalidImageError(f"invalid image: {_sniff(data)} (not decoded)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # The header declares more pixels than Pillow's own limit (above ours unless
        # MAX_IMAGE_PIXELS is set very high): refused before any decoding.
        raise InvalidImageError(
            f"invalid image: its header declares over {Image.MAX_IMAGE_PIXELS} pixels, "
            f"over the {max_pixels} pixel limit (not decoded)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"invalid image: not a decodable image: {exc}") from None
    extension, mime = ALLOWED_FORMATS[fmt]
    return CheckedImage(data, extension, mime, width, height)


def _sniff(data: bytes) -> str:
    """Why bytes no allowed decoder accepted were refused, naming their format if known."""
    head = data[:16].lstrip()
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return f"format {name} is not PNG, JPEG or WebP"
    return f"not PNG, JPEG or WebP (starts with {data[:8].hex()})"


def thumbnail(data: bytes, size_px: int) -> bytes:
    """A WebP thumbnail that fits in size_px x size_px, aspect ratio kept."""
    # Bytes check_image accepted: still only the three decoders.
    with Image.open(io.BytesIO(data), formats=OPEN_FORMATS) as image:
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
