"""A redraw's picture lives under the row's other key slot (``{id}_v2.png``): those keys
are still the row's for the garbage outbox (a deleted person leaves neither slot) and
for the orphan scan (the slot the row does not name is an orphan, the one it names is
not)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import picture_pipeline, visualized
from workers.providers.storage import LocalImageStore
from workers.services.media import image_key, slot_of, thumbnail_key

pytestmark = pytest.mark.integration


def test_both_slots_are_the_rows_for_gc_and_the_orphan_scan(engine: Engine, tmp_path: Path) -> None:
    service, media = picture_pipeline(engine, LocalImageStore(tmp_path, "http://m.test"))
    user_id, viz = visualized(engine, service)
    assert slot_of(image_key(viz, "png", 1)) == 1 and slot_of(thumbnail_key(viz)) == 0
    assert slot_of("visualizations/not-ours.png") is None
    # A redraw stored mid-way (its row still names slot 0): an orphan once old enough.
    media.store.put(image_key(viz, "png", 1), b"redrawn", "image/png")
    media.store.put(thumbnail_key(viz, 1), b"redrawn thumb", "image/webp")
    assert sorted(media.find_orphans(min_age_s=0)) == [
        image_key(viz, "png", 1),
        thumbnail_key(viz, 1),
    ]
    # The row names slot 1 now (as a redraw's completion writes it): slot 0 is the orphan.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE visualizations SET image_url = :i, thumbnail_url = :t WHERE id = :v"),
            {
                "i": f"http://m.test/{image_key(viz, 'png', 1)}",
                "t": f"http://m.test/{thumbnail_key(viz, 1)}",
                "v": viz,
            },
        )
    assert sorted(media.find_orphans(min_age_s=0)) == [image_key(viz, "png"), thumbnail_key(viz)]
    media.retired(viz, 0)
    assert media.find_orphans(min_age_s=0) == []
    # A person who leaves leaves neither slot.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": user_id})
    assert media.collect_garbage() == (1, 2)
    assert list((tmp_path / "visualizations").glob("*")) == []
