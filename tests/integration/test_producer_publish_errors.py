"""A producer call whose commit succeeded but whose message the broker refused says so:
real PostgreSQL, and a real Redis broker URL on a port that refuses connections (after
the producer's own retries). ``entry_created``, ``start_intake`` and ``submit_answer``
raise PublishFailedError (not a transient error: retrying would write twice) saying that the change is saved and
when the reconciler publishes it again; the change is in the database; and
``emotionviz enqueue`` exits 1 with one line saying the same.

On the old code each call returned as if the message had left (``uow.publish_error``
was ignored): the caller could not know its picture or question would come only
minutes later, from the reconciler."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import dramatiq
import pytest
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.errors import PublishFailedError, TransientError
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import count, insert_entry, insert_user
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.producer_api import ProducerAPI
from workers.settings import Settings

pytestmark = pytest.mark.integration

SAYS_WHAT_HEALS = "do not repeat the call: the reconciler publishes it again once "
BACKLOG = " has passed and any backlog ahead of it in the queue has moved on"


@pytest.fixture
def refusing_redis_url() -> Iterator[str]:
    """A Redis URL on 127.0.0.1 whose port is bound but never listens: refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.fixture
def down_broker(refusing_redis_url: str, redis_namespace: str) -> Iterator[dramatiq.Broker]:
    settings = Settings(_env_file=None, redis_namespace=redis_namespace)  # type: ignore[call-arg]
    broker = build_broker(settings, refusing_redis_url)
    yield broker
    broker.close()


@pytest.fixture
def uow_factory(engine: Engine, down_broker: dramatiq.Broker) -> Callable[[], UnitOfWork]:
    factory = make_session_factory(engine)
    producer = Producer(down_broker)
    return lambda: UnitOfWork(factory, producer)


def test_entry_created_raises_when_its_message_could_not_be_published(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)
    api = ProducerAPI(uow_factory)
    with pytest.raises(PublishFailedError) as raised:
        api.entry_created(entry_id, user_id, VisualizationStyle.METAPHOR)
    error = raised.value
    assert not isinstance(error, TransientError)  # a retrying caller must not write twice
    assert error.saved_id == entry_id
    reason = str(error)
    assert reason.startswith(f"the request for entry {entry_id} is saved, but its message ")
    assert "the broker did not take the 1 messages after 4 attempts" in reason
    assert reason.endswith(SAYS_WHAT_HEALS + "RECONCILE_GRACE_S (300 s, about 5 minutes)" + BACKLOG)
    assert "\n" not in reason
    with engine.connect() as conn:  # the style the reconciler will republish (db/uow.py)
        style = conn.execute(
            text("SELECT style FROM visualizations WHERE entry_id = :e"), {"e": entry_id}
        ).scalar_one()
    assert style == "metaphor"


def test_start_intake_raises_with_the_saved_session(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
    api = ProducerAPI(uow_factory, reconcile_grace_s=90)
    with pytest.raises(PublishFailedError) as raised:
        api.start_intake(user_id, "A hard week at work")
    session_id = raised.value.saved_id
    assert session_id is not None
    assert str(raised.value).startswith(f"intake session {session_id} is saved, but ")
    assert str(raised.value).endswith(SAYS_WHAT_HEALS + "RECONCILE_GRACE_S (90 s)" + BACKLOG)
    with engine.connect() as conn:  # the session exists: repeating the call would fork it
        assert count(conn, "intake_sessions", "id = :s AND user_id = :u", s=session_id, u=user_id)
        assert count(conn, "intake_sessions", "user_id = :u", u=user_id) == 1


def test_submit_answer_raises_and_keeps_the_answer(
    engine: Engine, uow_factory: Callable[[], UnitOfWork]
) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
    with uow_factory() as uow:  # a session whose first question is waiting
        session_id = uow.intake.create(user_id, "A hard week at work")
        assert uow.intake.store_question(
            session_id,
            expected_len=0,
            exchange={
                "step": 1,
                "question": "What felt heaviest?",
                "asked_at": datetime.now(UTC).isoformat(),
                "answer": None,
                "answered_at": None,
            },
            ai_context={},
        )
        uow.commit()
    api = ProducerAPI(uow_factory)
    with pytest.raises(PublishFailedError) as raised:
        api.submit_answer(session_id, user_id, step=1, answer="The deadline")
    assert raised.value.saved_id == session_id
    assert str(raised.value).startswith(
        f"the answer to question 1 of session {session_id} is saved, but "
    )
    with engine.connect() as conn:
        history = conn.execute(
            text("SELECT conversation_history FROM intake_sessions WHERE id = :s"),
            {"s": session_id},
        ).scalar_one()
    assert history[0]["answer"] == "The deadline"


def test_enqueue_exits_1_with_one_line_when_the_broker_refuses(
    db_url: str, engine: Engine, refusing_redis_url: str, redis_namespace: str
) -> None:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "REDIS_URL": refusing_redis_url,
        "REDIS_NAMESPACE": redis_namespace,
        "PROVIDER": "local",
        "RECONCILE_GRACE_S": "600",
        "PYTHONPATH": str(Path.cwd()),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "ERROR",  # the producer's retry warnings are not the point here
    }
    proc = subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", "enqueue", "entry", str(entry_id)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        f"emotionviz enqueue: the request for entry {entry_id} is saved, but its message "
    )
    assert lines[0].endswith(
        SAYS_WHAT_HEALS + "RECONCILE_GRACE_S (600 s, about 10 minutes)" + BACKLOG
    )
