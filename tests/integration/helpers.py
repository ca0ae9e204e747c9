"""Small SQL helpers for integration tests (raw SQL, so the database itself judges)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Connection, Engine, text

from db.engine import make_session_factory
from db.repositories import ClaimedVisualization
from db.uow import UnitOfWork
from domain.messages import EntryCreated
from domain.providers import ImageStore
from workers.providers.factory import Providers
from workers.providers.local import LocalAnalysisProvider, LocalImageProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.services.media import MediaLifecycle
from workers.services.visualize import Outcome, VisualizationService, VisualizeLimits


def insert_user(conn: Connection, email: str | None = None) -> uuid.UUID:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    return conn.execute(
        text(
            "INSERT INTO users (email, hashed_password, name) VALUES (:e, 'x', 'Person') "
            "RETURNING id"
        ),
        {"e": email},
    ).scalar_one()


def insert_entry(
    conn: Connection,
    user_id: uuid.UUID,
    *,
    emotions: list[str] | None = None,
    intensity: Any = "0.50",
    situation: str = "A situation",
    created_at: Any = None,
    **extra: Any,
) -> uuid.UUID:
    params: dict[str, Any] = {
        "u": user_id,
        "s": situation,
        "em": emotions if emotions is not None else ["joy"],
        "i": intensity,
    }
    cols = "user_id, situation, emotions, intensity"
    vals = ":u, :s, CAST(:em AS text[]), CAST(:i AS numeric)"
    if created_at is not None:
        cols += ", created_at"
        vals += ", :c"
        params["c"] = created_at
    for key, value in extra.items():
        cols += f", {key}"
        vals += f", :{key}"
        params[key] = value
    return conn.execute(
        text(f"INSERT INTO emotion_entries ({cols}) VALUES ({vals}) RETURNING id"), params
    ).scalar_one()


def refresh_analytics(engine: Engine, user_id: uuid.UUID | None = None, moment: Any = None) -> int:
    """Queue the (person, UTC day) of ``moment`` as a completion does (when given; the
    triggers queue deletes and edits themselves) and drain the queue as the worker's
    refresher does; returns the rows drained."""
    from datetime import UTC

    from workers.services.analytics import drain_analytics_refresh_queue

    if user_id is not None and moment is not None:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO analytics_refresh_queue (user_id, day) VALUES (:u, :d)"),
                {"u": user_id, "d": moment.astimezone(UTC).date()},
            )
    sessions = make_session_factory(engine)
    return drain_analytics_refresh_queue(lambda: UnitOfWork(sessions), limit=10_000)


def count(conn: Connection, table: str, where: str = "true", **params: Any) -> int:
    return int(
        conn.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"), params).scalar_one()
    )


def insert_visualization(
    conn: Connection, entry_id: uuid.UUID, user_id: uuid.UUID, style: str | None = None
) -> uuid.UUID:
    """A pending row, as upstream's API writes it (the column's default style if none)."""
    cols, vals = "entry_id, user_id", ":e, :u"
    params: dict[str, Any] = {"e": entry_id, "u": user_id}
    if style is not None:
        cols, vals = cols + ", style", vals + ", :s"
        params["s"] = style
    return conn.execute(
        text(f"INSERT INTO visualizations ({cols}) VALUES ({vals}) RETURNING id"), params
    ).scalar_one()


def claim(
    engine: Engine, entry_id: uuid.UUID, user_id: uuid.UUID, lease_s: int = 60
) -> ClaimedVisualization | None:
    """Take the lease with the production claim, in a unit as the worker runs it
    (workers/services/visualize.py: _claim): None when the row is not claimable."""
    with UnitOfWork(make_session_factory(engine)) as uow:
        uow.single_statement()
        _, claimed = uow.entry_pipeline.claim_entry(entry_id, user_id, None, lease_s)
        uow.commit()
    return claimed


def picture_pipeline(
    engine: Engine, store: ImageStore
) -> tuple[VisualizationService, MediaLifecycle]:
    """The offline providers drawing into ``store``, and its media lifecycle: the
    pictures' life through a real store (a folder, a bucket) in one process."""
    factory = make_session_factory(engine)
    providers = Providers(  # type: ignore[arg-type]
        LocalAnalysisProvider(), LocalImageProvider(64), store, LocalIntakeProvider()
    )
    service = VisualizationService(
        lambda: UnitOfWork(factory), providers, VisualizeLimits(60, 32, 10**7, 10**7)
    )
    return service, MediaLifecycle(lambda: UnitOfWork(factory), store)


def visualized(engine: Engine, service: VisualizationService) -> tuple[uuid.UUID, uuid.UUID]:
    """A new person's entry drawn to completion: (user id, visualization id)."""
    with engine.begin() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)
    assert service.process(EntryCreated(entry_id=entry_id, user_id=user_id)) is Outcome.COMPLETED
    with engine.connect() as conn:
        vid = conn.execute(
            text("SELECT id FROM visualizations WHERE entry_id = :e"), {"e": entry_id}
        )
        return user_id, vid.scalar_one()
