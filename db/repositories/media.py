"""Media bookkeeping: pictures whose visualization was deleted (the media_garbage
outbox a trigger fills) and which pictures rows still reference (for the orphan scan)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from db.models import MediaGarbage, Visualization


class MediaRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def garbage(self, limit: int = 1000) -> list[tuple[int, uuid.UUID]]:
        """(outbox id, visualization id) of deleted visualizations, oldest first."""
        rows = self.session.execute(
            select(MediaGarbage.id, MediaGarbage.visualization_id)
            .order_by(MediaGarbage.id)
            .limit(limit)
        )
        return [(int(r[0]), r[1]) for r in rows]

    def forget_garbage(self, ids: Sequence[int]) -> None:
        if ids:
            self.session.execute(delete(MediaGarbage).where(MediaGarbage.id.in_(list(ids))))

    def referenced(
        self, visualization_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, tuple[str | None, str | None]]:
        """image_url and thumbnail_url of those of these visualizations that exist."""
        if not visualization_ids:
            return {}
        v = Visualization
        rows = self.session.execute(
            select(v.id, v.image_url, v.thumbnail_url).where(v.id.in_(list(visualization_ids)))
        )
        return {r[0]: (r[1], r[2]) for r in rows}
