"""Repositories hand out plain data: every read is a frozen dataclass (or plain values)
that stays usable after its unit of work ended, every write takes plain values."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, text

from db.listen import listen
from db.uow import UnitOfWork
from domain.intake import NOTIFY_CHANNEL
from tests.integration.helpers import (
    insert_entry,
    insert_user,
    insert_visualization,
    refresh_analytics,
)

pytestmark = pytest.mark.integration


def _plain(row: Any) -> None:
    """A frozen dataclass, not an ORM object."""
    assert dataclasses.is_dataclass(row) and not isinstance(row, type)
    assert type(row).__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert not hasattr(row, "_sa_instance_state")


def test_reads_are_frozen_dataclasses_usable_after_the_unit_of_work(
    uow: UnitOfWork, engine: Engine
) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn, "reader@example.com")
        entry_id = insert_entry(
            conn, user_id, emotions=["joy", "fear"], created_at=datetime.now(UTC)
        )
        insert_visualization(conn, entry_id, user_id, "diagram")
    with uow:
        session_id = uow.intake.create(user_id, "A walk in the rain")
        uow.commit()
    refresh_analytics(engine, user_id, datetime.now(UTC))
    with uow:
        user = uow.users.get_by_email("reader@example.com")
        viz = uow.visualizations.get_by_entry(entry_id)
        session = uow.intake.get(session_id, for_update=True)
        sessions = uow.intake.get_many([session_id, uuid.uuid4()])
        analytics = uow.analytics.for_user(user_id)
        gallery = uow.showcase.gallery_entries()
        talks = uow.showcase.conversations()
    # Read after the unit of work rolled back and closed its session.
    assert user is not None and user.id == user_id
    assert viz is not None and (viz.status, viz.style, viz.insights) == ("pending", "diagram", [])
    assert session is not None and session.conversation_history == []
    assert (session.user_id, session.is_complete, session.current_step) == (user_id, False, 1)
    assert sessions == [session]
    assert len(analytics) == 3  # the entry's day, week and month
    assert all(a.total_entries == 1 for a in analytics)
    assert all(a.most_common_emotions == ["fear", "joy"] for a in analytics)  # ties: by name
    assert gallery[0].visualization == viz and gallery[0].emotions == ("joy", "fear")
    assert talks == [(session, None)]
    for row in (user, viz, session, *analytics, gallery[0]):
        _plain(row)


def test_writes_take_plain_values(uow: UnitOfWork, engine: Engine) -> None:
    with uow:
        user_id = uow.users.add(email="writer@example.com", name="Writer", hashed_password="x")
        entry_id = uow.entries.add(
            user_id=user_id, situation="Sunrise", emotions=("joy",), intensity=Decimal("0.40")
        )
        uow.commit()
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT user_id, source, notes FROM emotion_entries WHERE id = :id"),
            {"id": entry_id},
        ).one()
    assert tuple(row) == (user_id, "manual", None)  # the column defaults apply


def test_lane_lock_is_held_until_the_unit_of_work_ends(uow: UnitOfWork, engine: Engine) -> None:
    probe = text("SELECT pg_try_advisory_xact_lock(hashtext('emotion_analytics:week'), 3)")
    with uow:
        uow.analytics.lock_lane("week", 3)
        with engine.connect() as other:
            assert other.execute(probe).scalar_one() is False
    with engine.connect() as other:
        assert other.execute(probe).scalar_one() is True


def test_listen_hears_a_notification_only_after_commit(uow: UnitOfWork, db_url: str) -> None:
    with listen(db_url, NOTIFY_CHANNEL) as announcements:
        with uow:
            uow.intake.notify(NOTIFY_CHANNEL, {"step": 1})
        assert announcements.next(timeout=0.2) is None  # rolled back: never announced
        with uow:
            uow.intake.notify(NOTIFY_CHANNEL, {"step": 2})
            uow.commit()
        assert announcements.next(timeout=5) == {"step": 2}
