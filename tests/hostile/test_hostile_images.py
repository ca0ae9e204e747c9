"""A hostile image model, through the real actor, failure policy and service on real
PostgreSQL: pictures in formats we do not accept (valid GIF, BMP, TIFF, ICO made by
Pillow) and a decompression-bomb header fail their row for good, once (no retry, no
second paid call), with a reason that names what was wrong and classifies as
``invalid_output``; no decoder but PNG, JPEG and WebP ever runs on the bytes, and
nothing is stored in the media folder."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Retries
from PIL import Image
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.analysis import Analysis, EntrySnapshot, ImageResult
from domain.failures import failure_class
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import insert_entry, insert_user
from workers.entrypoints.actors import ActorDependencies, declare_actors
from workers.providers.factory import Providers
from workers.providers.local import LocalAnalysisProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.providers.storage import LocalImageStore
from workers.services.visualize import VisualizationService, VisualizeLimits
from workers.settings import Settings

pytestmark = pytest.mark.integration

ALLOWED = {"PNG", "JPEG", "WEBP"}


def _picture(fmt: str, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (64, 48), 9).save(buffer, format=fmt)
    return buffer.getvalue()


def _bomb_header(side: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 65536, 9)  # inflates to far more than it weighs
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


HOSTILE = {
    "gif": (_picture("GIF", "P"), "invalid image: format GIF is not PNG, JPEG or WebP"),
    "bmp": (_picture("BMP", "RGB"), "invalid image: format BMP is not PNG, JPEG or WebP"),
    "tiff": (_picture("TIFF", "RGB"), "invalid image: format TIFF is not PNG, JPEG or WebP"),
    "ico": (_picture("ICO", "RGBA"), "invalid image: format ICO is not PNG, JPEG or WebP"),
    "bomb": (_bomb_header(200_000), "invalid image: its header declares over"),
}


class HostileImages:
    """An image model that answers each entry with the bytes planted for it."""

    name = "hostile"

    def __init__(self) -> None:
        self.planted: dict[str, bytes] = {}
        self.calls: dict[str, int] = {}

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        self.calls[entry.entry_id] = self.calls.get(entry.entry_id, 0) + 1
        data = self.planted[entry.entry_id]
        return ImageResult(data=data, mime_type="image/png", raw_response={"provider": self.name})


def test_hostile_pictures_fail_their_row_once_with_a_clear_reason(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.init()
    opened: list[str] = []
    for name, (factory, accept) in list(Image.OPEN.items()):
        if name not in ALLOWED:

            def spy(*args: Any, _name: str = name, _factory: Any = factory) -> Any:
                opened.append(_name)
                return _factory(*args)

            monkeypatch.setitem(Image.OPEN, name, (spy, accept))

    images = HostileImages()
    media = tmp_path / "media"
    providers = Providers(
        LocalAnalysisProvider(),
        images,
        LocalImageStore(media, "http://media.test/m"),
        LocalIntakeProvider(),
    )
    factory = make_session_factory(engine)
    service = VisualizationService(
        lambda: UnitOfWork(factory),
        providers,
        VisualizeLimits(lease_s=60, thumbnail_px=64, max_image_bytes=10**7, max_image_pixels=10**7),
    )
    settings = Settings(_env_file=None, max_retries=3)  # type: ignore[call-arg]
    broker = StubBroker(middleware=[Retries(max_retries=3, min_backoff=5), CurrentMessage()])
    broker.emit_after("process_boot")
    counted: list[str] = []
    deps = ActorDependencies(
        visualization=lambda: service,
        intake=lambda: None,  # type: ignore[arg-type, return-value]
        recompute=lambda message: None,  # type: ignore[arg-type, return-value]
        reconcile=lambda: None,  # type: ignore[arg-type, return-value]
        collect_media_garbage=lambda: (0, 0),
        publisher=lambda: None,  # type: ignore[arg-type, return-value]
        count=counted.append,
    )
    actors = declare_actors(broker, settings, deps)
    entries = {}
    with engine.begin() as conn:
        user_id = insert_user(conn)
        for name, (data, _) in HOSTILE.items():
            entry_id = insert_entry(conn, user_id, situation=f"hostile {name}")
            images.planted[str(entry_id)] = data
            entries[name] = entry_id

    worker = dramatiq.Worker(broker, worker_timeout=10, worker_threads=2)
    for entry_id in entries.values():
        actors.entry_created.send(EntryCreated(entry_id=entry_id, user_id=user_id).to_payload())
    worker.start()
    try:
        broker.join(EntryCreated.queue_name, fail_fast=False, timeout=30_000)
    finally:
        worker.stop()
        broker.close()

    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                text(
                    "SELECT entry_id, (status, error_message, image_url) FROM visualizations "
                    "WHERE entry_id = ANY(:e)"
                ),
                {"e": list(entries.values())},
            ).all()
        )
    assert opened == []  # no GIF/BMP/TIFF/ICO plugin ever parsed the bytes
    assert "retries" not in counted  # permanent: failed at once
    for name, entry_id in entries.items():
        status, reason, image_url = rows[entry_id]
        assert status == "failed" and image_url is None, (name, status, reason)
        assert reason.startswith(HOSTILE[name][1]), (name, reason)
        assert failure_class(reason) == "invalid_output", (name, reason)
        assert images.calls[str(entry_id)] == 1, name  # one paid call, not one per retry
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))
