"""Untrusted image bytes meet only the PNG, JPEG and WebP decoders: a valid picture in
any other format Pillow knows is refused without its plugin ever running, and a header
that declares too many pixels is refused before anything is decoded.

A spy stands in each other plugin's slot of ``Image.OPEN`` (Pillow's own registry): on
the old code (``Image.open`` without ``formats=``) the GIF, BMP, TIFF and ICO plugins
parsed the bytes first, and the file was refused only after a full decode."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image, ImageFile

from domain.errors import InvalidImageError
from domain.failures import failure_class
from workers.services.imaging import check_image, thumbnail

pytestmark = pytest.mark.unit

LIMITS = {"max_bytes": 10**6, "max_pixels": 10**6}
ALLOWED = {"PNG", "JPEG", "WEBP"}


def _saved(fmt: str, mode: str = "RGB", size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 7).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def tried(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The formats whose plugin was asked to open something (only those not allowed)."""
    Image.init()  # every plugin registered, as in a long-running worker
    calls: list[str] = []
    for name, (factory, accept) in list(Image.OPEN.items()):
        if name in ALLOWED:
            continue

        def spy(*args: Any, _name: str = name, _factory: Any = factory) -> Any:
            calls.append(_name)
            return _factory(*args)

        monkeypatch.setitem(Image.OPEN, name, (spy, accept))
    yield calls


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The images whose pixels were decoded (ImageFile.load), by format."""
    loads: list[str] = []
    original = ImageFile.ImageFile.load

    def load(self: ImageFile.ImageFile) -> Any:
        loads.append(self.format or "?")
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    return loads


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB"), ("ICO", "RGBA")],
)
def test_a_valid_picture_in_another_format_is_refused_by_no_other_decoder(
    fmt: str, mode: str, tried: list[str], decoded: list[str]
) -> None:
    data = _saved(fmt, mode)
    with pytest.raises(InvalidImageError) as refused:
        check_image(data, **LIMITS)
    assert tried == [] and decoded == []  # the old code: [fmt] and [fmt]
    reason = str(refused.value)
    assert reason == f"invalid image: format {fmt} is not PNG, JPEG or WebP (not decoded)"
    assert failure_class(reason) == "invalid_output"  # a class operators can count


def test_unknown_bytes_are_refused_with_their_first_bytes(tried: list[str]) -> None:
    with pytest.raises(InvalidImageError, match=r"not PNG, JPEG or WebP \(starts with 00ff"):
        check_image(b"\x00\xff" + b"garbage" * 20, **LIMITS)
    assert tried == []


def test_the_thumbnail_opens_only_the_allowed_formats_too(tried: list[str]) -> None:
    with pytest.raises(Image.UnidentifiedImageError):
        thumbnail(_saved("GIF", "P"), 16)
    assert tried == []


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with a tiny (truncated) IDAT: what a
    decompression bomb looks like before its stream is inflated."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("side", "limit"),
    [
        (100_000, 4096 * 4096),  # 10^10 pixels: past Pillow's own bomb limit too
        (10_000, 4096 * 4096),  # 10^8: past Pillow's warning threshold
        (6_000, 4096 * 4096),  # 3.6 x 10^7: past ours only
    ],
)
def test_a_decompression_bomb_header_is_refused_before_decoding(
    side: int, limit: int, decoded: list[str]
) -> None:
    with pytest.raises(InvalidImageError) as refused:
        check_image(_png_header_only(side, side), max_bytes=10**6, max_pixels=limit)
    reason = str(refused.value)
    assert reason.startswith("invalid image: ") and f"the {limit} pixel limit" in reason
    assert failure_class(reason) == "invalid_output"
    assert decoded == []


def test_the_byte_limit_is_checked_before_any_decoder(tried: list[str]) -> None:
    data = _saved("PNG")
    with pytest.raises(InvalidImageError, match=f"{len(data)} bytes, over the 20 byte limit"):
        check_image(data, max_bytes=20, max_pixels=10**6)
    assert tried == []


@pytest.mark.parametrize(("fmt", "ext"), [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
def test_the_three_formats_still_pass_and_are_decoded_in_full(
    fmt: str, ext: str, decoded: list[str]
) -> None:
    checked = check_image(_saved(fmt, size=(40, 30)), **LIMITS)
    assert (checked.extension, checked.width, checked.height) == (ext, 40, 30)
    assert decoded == [fmt]  # the full decode still catches a truncated file
    with Image.open(io.BytesIO(thumbnail(checked.data, 20))) as thumb:
        assert thumb.format == "WEBP" and thumb.size == (20, 15)
