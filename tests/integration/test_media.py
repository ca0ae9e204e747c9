"""Pictures live as long as their rows: deleting a person removes their files, a redraw
in another format removes the old one, and the orphan scan finds the rest."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.messages import EntryCreated
from tests.integration.helpers import insert_entry, insert_user
from workers.providers.factory import Providers
from workers.providers.local import LocalAnalysisProvider, LocalImageProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.providers.storage import LocalImageStore
from workers.services.media import MediaLifecycle, image_key
from workers.services.visualize import Outcome, VisualizationService, VisualizeLimits

pytestmark = pytest.mark.integration


def _setup(engine: Engine, tmp_path: Path) -> tuple[VisualizationService, MediaLifecycle]:
    factory = make_session_factory(engine)
    store = LocalImageStore(tmp_path, "http://m.test")
    providers = Providers(  # type: ignore[arg-type]
        LocalAnalysisProvider(), LocalImageProvider(64), store, LocalIntakeProvider()
    )
    service = VisualizationService(
        lambda: UnitOfWork(factory), providers, VisualizeLimits(60, 32, 10**7, 10**7)
    )
    return service, MediaLifecycle(lambda: UnitOfWork(factory), store)


def _visualized(engine: Engine, service: VisualizationService) -> tuple[uuid.UUID, uuid.UUID]:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)
    assert service.process(EntryCreated(entry_id=entry_id, user_id=user_id)) is Outcome.COMPLETED
    with engine.connect() as conn:
        vid = conn.execute(
            text("SELECT id FROM visualizations WHERE entry_id = :e"), {"e": entry_id}
        )
        return user_id, vid.scalar_one()


def _files(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "visualizations").glob("*")}


def test_a_person_who_leaves_leaves_no_picture(engine: Engine, tmp_path: Path) -> None:
    service, media = _setup(engine, tmp_path)
    leaving, leaving_viz = _visualized(engine, service)
    _staying, staying_viz = _visualized(engine, service)
    assert len(_files(tmp_path)) == 4
    with engine.begin() as conn:  # the API deletes the account; FKs cascade
        conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": leaving})
    assert media.collect_garbage() == (1, 2)
    assert _files(tmp_path) == {f"{staying_viz}.png", f"{staying_viz}_thumb.webp"}
    assert media.collect_garbage() == (0, 0)  # the outbox row is gone too
    assert str(leaving_viz) not in " ".join(_files(tmp_path))


def test_a_redraw_in_another_format_removes_the_old_file(engine: Engine, tmp_path: Path) -> None:
    service, media = _setup(engine, tmp_path)
    _user, viz = _visualized(engine, service)
    media.store.put(image_key(viz, "jpg"), b"old picture", "image/jpeg")
    media.replaced(viz, "png")
    assert _files(tmp_path) == {f"{viz}.png", f"{viz}_thumb.webp"}


def test_orphans_are_listed_then_deleted_and_young_files_spared(
    engine: Engine, tmp_path: Path
) -> None:
    service, media = _setup(engine, tmp_path)
    _user, viz = _visualized(engine, service)
    stray = image_key(uuid.uuid4(), "png")
    media.store.put(stray, b"a picture nobody references", "image/png")
    assert media.find_orphans() == []  # younger than an hour: maybe a job mid-way
    dry = media.gc(apply=False, min_age_s=0)
    assert dry.orphans == [stray] and dry.files_deleted == 0
    assert (tmp_path / stray).exists()
    applied = media.gc(apply=True, min_age_s=0)
    assert applied.files_deleted == 1 and not (tmp_path / stray).exists()
    assert _files(tmp_path) == {f"{viz}.png", f"{viz}_thumb.webp"}
