"""Pictures live as long as their rows: deleting a person removes their files, a redraw
in another format removes the old one, and the orphan scan finds the rest."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import picture_pipeline, visualized
from workers.providers.storage import LocalImageStore
from workers.services.media import MediaLifecycle, image_key
from workers.services.visualize import VisualizationService

pytestmark = pytest.mark.integration


def _setup(engine: Engine, tmp_path: Path) -> tuple[VisualizationService, MediaLifecycle]:
    return picture_pipeline(engine, LocalImageStore(tmp_path, "http://m.test"))


def _files(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "visualizations").glob("*")}


def test_a_person_who_leaves_leaves_no_picture(engine: Engine, tmp_path: Path) -> None:
    service, media = _setup(engine, tmp_path)
    leaving, leaving_viz = visualized(engine, service)
    _staying, staying_viz = visualized(engine, service)
    assert len(_files(tmp_path)) == 4
    with engine.begin() as conn:  # the API deletes the account; FKs cascade
        conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": leaving})
    assert media.collect_garbage() == (1, 2)
    assert _files(tmp_path) == {f"{staying_viz}.png", f"{staying_viz}_thumb.webp"}
    assert media.collect_garbage() == (0, 0)  # the outbox row is gone too
    assert str(leaving_viz) not in " ".join(_files(tmp_path))


def test_a_redraw_in_another_format_removes_the_old_file(engine: Engine, tmp_path: Path) -> None:
    service, media = _setup(engine, tmp_path)
    _user, viz = visualized(engine, service)
    media.store.put(image_key(viz, "jpg"), b"old picture", "image/jpeg")
    media.replaced(viz, "png")
    assert _files(tmp_path) == {f"{viz}.png", f"{viz}_thumb.webp"}


def test_orphans_are_listed_then_deleted_and_young_files_spared(
    engine: Engine, tmp_path: Path
) -> None:
    service, media = _setup(engine, tmp_path)
    _user, viz = visualized(engine, service)
    stray = image_key(uuid.uuid4(), "png")
    media.store.put(stray, b"a picture nobody references", "image/png")
    assert media.find_orphans() == []  # younger than an hour: maybe a job mid-way
    dry = media.gc(apply=False, min_age_s=0)
    assert dry.orphans == [stray] and dry.files_deleted == 0
    assert (tmp_path / stray).exists()
    applied = media.gc(apply=True, min_age_s=0)
    assert applied.files_deleted == 1 and not (tmp_path / stray).exists()
    assert _files(tmp_path) == {f"{viz}.png", f"{viz}_thumb.webp"}
