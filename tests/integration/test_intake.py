"""The intake service and the producer helpers on real PostgreSQL and a real Redis
broker (the worker processes are in tests/e2e/test_intake.py)."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import psycopg
import pytest
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.errors import (
    ConflictError,
    DataRejectedError,
    InvalidMessageError,
    InvalidModelOutputError,
    NotFoundError,
    OwnershipError,
    PermanentError,
    TransientError,
)
from domain.intake import MAX_ANSWER_CHARS, NOTIFY_CHANNEL, AskNext, Complete, IntakeState
from domain.messages import IntakeStep
from tests.integration.helpers import count, insert_user
from workers.messaging.producer import Producer
from workers.messaging.redis_keys import queue_keys
from workers.producer_api import ProducerAPI
from workers.providers.local_intake import LocalIntakeProvider
from workers.services.intake import IntakeOutcome, IntakeService

pytestmark = pytest.mark.integration


@pytest.fixture
def producer(broker: dramatiq.Broker) -> Producer:
    return Producer(broker)


def _queued(producer: Producer, queue: str) -> list[dict[str, Any]]:
    """The message bodies waiting on ``queue`` in Redis, oldest first."""
    broker = producer.broker
    client = broker.client  # type: ignore[attr-defined]
    keys = queue_keys(broker.namespace, queue)  # type: ignore[attr-defined]
    ids = client.lrange(keys.ready, 0, -1)
    return [json.loads(client.hget(keys.ready_bodies, i))["args"][0] for i in ids]


def _service(engine: Engine, producer: Producer, provider: Any = None) -> IntakeService:
    factory = make_session_factory(engine)
    return IntakeService(
        lambda: UnitOfWork(factory, producer),
        provider or LocalIntakeProvider(),
        max_steps=4,
    )


def _api(engine: Engine, producer: Producer) -> ProducerAPI:
    factory = make_session_factory(engine)
    return ProducerAPI(lambda: UnitOfWork(factory, producer))


def _user(engine: Engine) -> uuid.UUID:
    with engine.begin() as conn:
        return insert_user(conn)


def _start(engine: Engine, producer: Producer, user_id: uuid.UUID, situation: str) -> uuid.UUID:
    return _api(engine, producer).start_intake(user_id, situation)


def _answer(
    engine: Engine, producer: Producer, session_id: uuid.UUID, user_id: uuid.UUID, step: int, a: str
) -> int:
    return _api(engine, producer).submit_answer(session_id, user_id, step=step, answer=a)


def _row(engine: Engine, session_id: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT * FROM intake_sessions WHERE id = :s"), {"s": session_id}
        ).mappings()
        return dict(row.one())


def test_whole_conversation_to_an_entry_and_entry_created(
    engine: Engine, producer: Producer
) -> None:
    user_id = _user(engine)
    service = _service(engine, producer)
    session_id = _start(engine, producer, user_id, "My sister surprised me with a visit")
    assert _queued(producer, "intake") == [
        {"session_id": str(session_id), "user_id": str(user_id), "step": 1, "version": 1}
    ]
    answers = [
        "I was so happy and a bit shocked",
        "About 8, my chest felt light",
        "She had been away for a year and I missed her",
    ]
    step = 1
    for answer in answers:
        message = IntakeStep(session_id=session_id, user_id=user_id, step=step)
        assert service.process(message).outcome is IntakeOutcome.ASKED
        step = _answer(engine, producer, session_id, user_id, step, answer)
    result = service.process(IntakeStep(session_id=session_id, user_id=user_id, step=step))
    assert result.outcome is IntakeOutcome.COMPLETED

    row = _row(engine, session_id)
    assert row["is_complete"] and row["completed_at"] is not None
    assert [e["answer"] for e in row["conversation_history"]] == answers
    assert [e["step"] for e in row["conversation_history"]] == [1, 2, 3]
    assert "surprised me" in row["final_summary"] and answers[1] in row["final_summary"]
    with engine.connect() as conn:
        entry = (
            conn.execute(
                text("SELECT * FROM emotion_entries WHERE intake_session_id = :s"),
                {"s": session_id},
            )
            .mappings()
            .one()
        )
    assert entry["id"] == result.entry_id and entry["source"] == "intake_flow"
    assert entry["user_id"] == user_id and entry["situation"] == row["initial_situation"]
    assert str(entry["intensity"]) == "0.80" and "joy" in entry["emotions"]
    assert _queued(producer, "visualizations") == [
        {"entry_id": str(entry["id"]), "user_id": str(user_id), "version": 1}
    ]
    # A completed session is a no-op, for any step.
    for late in (step, step + 1, 1):
        again = service.process(IntakeStep(session_id=session_id, user_id=user_id, step=late))
        assert again.outcome is IntakeOutcome.ALREADY_DONE
    with engine.connect() as conn:
        assert count(conn, "emotion_entries", "intake_session_id = :s", s=session_id) == 1


def test_repeated_message_changes_nothing(engine: Engine, producer: Producer) -> None:
    user_id = _user(engine)
    service = _service(engine, producer)
    session_id = _start(engine, producer, user_id, "A hard meeting")
    message = IntakeStep(session_id=session_id, user_id=user_id, step=1)
    assert service.process(message).outcome is IntakeOutcome.ASKED
    before = _row(engine, session_id)
    assert service.process(message).outcome is IntakeOutcome.ALREADY_DONE
    assert _row(engine, session_id) == before


def test_answer_not_stored_yet_is_transient_and_skipping_ahead_is_rejected(
    engine: Engine, producer: Producer
) -> None:
    user_id = _user(engine)
    service = _service(engine, producer)
    session_id = _start(engine, producer, user_id, "A hard meeting")
    service.process(IntakeStep(session_id=session_id, user_id=user_id, step=1))
    with pytest.raises(TransientError, match="answer to step 1 is not stored yet"):
        service.process(IntakeStep(session_id=session_id, user_id=user_id, step=2))
    with pytest.raises(InvalidMessageError, match="skips ahead"):
        service.process(IntakeStep(session_id=session_id, user_id=user_id, step=3))
    _answer(engine, producer, session_id, user_id, 1, "I was anxious")
    outcome = service.process(IntakeStep(session_id=session_id, user_id=user_id, step=2))
    assert outcome.outcome is IntakeOutcome.ASKED


class GatedProvider(LocalIntakeProvider):
    """Holds every call at a barrier, so two workers are inside the model call together."""

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=10)
        self.calls = 0

    def next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        self.calls += 1
        self.barrier.wait()
        return super().next_turn(state)


@pytest.mark.parametrize("completing", [False, True])
def test_two_workers_racing_on_one_step_make_one_effect(
    engine: Engine, producer: Producer, completing: bool
) -> None:
    user_id = _user(engine)
    session_id = _start(engine, producer, user_id, "I was furious and then sad")
    provider = GatedProvider(parties=2)
    step = 1
    if completing:  # answer up to the step limit, so the raced step completes
        for n in range(1, 5):
            _service(engine, producer).process(
                IntakeStep(session_id=session_id, user_id=user_id, step=n)
            )
            step = _answer(engine, producer, session_id, user_id, n, "it went on and on")
    service = _service(engine, producer, provider)
    message = IntakeStep(session_id=session_id, user_id=user_id, step=step)
    results: list[IntakeOutcome] = []
    threads = [
        threading.Thread(target=lambda: results.append(service.process(message).outcome))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    winner = IntakeOutcome.COMPLETED if completing else IntakeOutcome.ASKED
    assert provider.calls == 2 and sorted(results) == sorted([winner, IntakeOutcome.LOST_RACE])
    row = _row(engine, session_id)
    assert len(row["conversation_history"]) == step - (1 if completing else 0)
    assert row["is_complete"] is completing
    with engine.connect() as conn:
        entries = count(conn, "emotion_entries", "intake_session_id = :s", s=session_id)
    assert entries == (1 if completing else 0)
    assert len(_queued(producer, "visualizations")) == entries


@pytest.fixture
def listener(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    conn = psycopg.connect(
        db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
    )
    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
    yield conn
    conn.close()


def test_listener_hears_each_stored_question_and_the_completion(
    engine: Engine, producer: Producer, listener: psycopg.Connection[Any]
) -> None:
    user_id = _user(engine)
    service = _service(engine, producer)
    session_id = _start(engine, producer, user_id, "Moving house")
    service.process(IntakeStep(session_id=session_id, user_id=user_id, step=1))
    heard = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert heard == [{"session_id": str(session_id), "step": 1, "complete": False}]
    # The question is readable when the notification arrives (same transaction).
    assert _row(engine, session_id)["conversation_history"][0]["step"] == 1

    for step in range(1, 4):  # three answers with an emotion and a number: complete
        _answer(engine, producer, session_id, user_id, step, "nervous, 6 of 10")
        service.process(IntakeStep(session_id=session_id, user_id=user_id, step=step + 1))
    heard = [json.loads(n.payload) for n in listener.notifies(timeout=5, stop_after=3)]
    assert [(h["step"], h["complete"]) for h in heard] == [(2, False), (3, False), (4, True)]
    assert uuid.UUID(heard[-1]["entry_id"])


class BrokenProvider(LocalIntakeProvider):
    def next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        raise InvalidModelOutputError("the intake answer does not match the schema (test)")


def test_unusable_model_output_keeps_the_reason_and_the_conversation(
    engine: Engine, producer: Producer
) -> None:
    user_id = _user(engine)
    session_id = _start(engine, producer, user_id, "A long wait at the hospital")
    _service(engine, producer).process(IntakeStep(session_id=session_id, user_id=user_id, step=1))
    _answer(engine, producer, session_id, user_id, 1, "scared, maybe 7")
    broken = _service(engine, producer, BrokenProvider())
    message = IntakeStep(session_id=session_id, user_id=user_id, step=2)
    before = _row(engine, session_id)
    with pytest.raises(InvalidModelOutputError) as caught:
        broken.process(message)
    broken.record_failure(message, str(caught.value))
    after = _row(engine, session_id)
    assert after["conversation_history"] == before["conversation_history"]
    assert not after["is_complete"] and after["current_step"] == before["current_step"]
    assert "does not match the schema" in after["ai_context"]["last_error"]
    assert after["ai_context"]["failed_step"] == 2
    # An operator replays the step: it goes on from where it was.
    outcome = _service(engine, producer).process(message)
    assert outcome.outcome is IntakeOutcome.ASKED
    assert "last_error" not in _row(engine, session_id)["ai_context"]


def test_unknown_and_foreign_sessions_are_rejected(engine: Engine, producer: Producer) -> None:
    owner, stranger = _user(engine), _user(engine)
    service = _service(engine, producer)
    session_id = _start(engine, producer, owner, "Mine")
    with pytest.raises(NotFoundError, match="does not exist"):
        service.process(IntakeStep(session_id=uuid.uuid4(), user_id=owner, step=1))
    before = _row(engine, session_id)
    with pytest.raises(OwnershipError, match="does not belong"):
        service.process(IntakeStep(session_id=session_id, user_id=stranger, step=1))
    with pytest.raises(OwnershipError):
        _answer(engine, producer, session_id, stranger, 1, "not mine to answer")
    assert _row(engine, session_id) == before


@pytest.mark.parametrize(
    "history, reason",
    [
        ([{"step": 1, "question": "q"}], "asked_at"),
        ([{"step": 2, "question": "q", "asked_at": "2026-01-01T00:00:00Z"}], "position 1"),
        ([{"step": 1, "question": "q", "asked_at": "2026-01-01T00:00:00Z", "mood": 1}], "mood"),
        (
            [
                {"step": 1, "question": "q", "asked_at": "2026-01-01T00:00:00Z"},
                {"step": 2, "question": "q", "asked_at": "2026-01-01T00:00:00Z"},
            ],
            "no answer but is not last",
        ),
        ([["not", "an", "object"]], "conversation_history"),
    ],
)
def test_history_of_the_wrong_shape_is_a_permanent_error_and_left_alone(
    engine: Engine, producer: Producer, history: list[Any], reason: str
) -> None:
    user_id = _user(engine)
    with engine.begin() as conn:
        session_id = conn.execute(
            text(
                "INSERT INTO intake_sessions (user_id, initial_situation, conversation_history) "
                "VALUES (:u, 'x', CAST(:h AS jsonb)) RETURNING id"
            ),
            {"u": user_id, "h": json.dumps(history)},
        ).scalar_one()
    before = _row(engine, session_id)
    with pytest.raises(PermanentError, match=reason):
        _service(engine, producer).process(
            IntakeStep(session_id=session_id, user_id=user_id, step=2)
        )
    with pytest.raises(PermanentError, match=reason):
        _answer(engine, producer, session_id, user_id, 1, "an answer")
    assert _row(engine, session_id) == before


@pytest.mark.parametrize(
    "answer, reason",
    [("", "empty"), ("   \n ", "empty"), ("x" * (MAX_ANSWER_CHARS + 1), "longer than")],
)
def test_empty_or_oversized_answers_are_refused_and_change_nothing(
    engine: Engine, producer: Producer, answer: str, reason: str
) -> None:
    user_id = _user(engine)
    session_id = _start(engine, producer, user_id, "A party")
    _service(engine, producer).process(IntakeStep(session_id=session_id, user_id=user_id, step=1))
    before, queued = _row(engine, session_id), len(_queued(producer, "intake"))
    with pytest.raises(PermanentError, match=reason):
        _answer(engine, producer, session_id, user_id, 1, answer)
    assert _row(engine, session_id) == before
    assert len(_queued(producer, "intake")) == queued


def test_answer_helper_refuses_wrong_or_repeated_steps(engine: Engine, producer: Producer) -> None:
    user_id = _user(engine)
    session_id = _start(engine, producer, user_id, "A party")
    with pytest.raises(ConflictError, match="not the one awaiting"):
        _answer(engine, producer, session_id, user_id, 1, "too early: no question yet")
    _service(engine, producer).process(IntakeStep(session_id=session_id, user_id=user_id, step=1))
    _answer(engine, producer, session_id, user_id, 1, "first answer")
    with pytest.raises(ConflictError, match="already answered"):
        _answer(engine, producer, session_id, user_id, 1, "second try")
    assert _row(engine, session_id)["conversation_history"][0]["answer"] == "first answer"


def test_helpers_publish_only_after_commit(engine: Engine, producer: Producer) -> None:
    stranger = uuid.uuid4()  # no such user: the insert fails at commit, nothing is published
    with pytest.raises(DataRejectedError, match="intake_sessions_user_id_fkey"):
        _start(engine, producer, stranger, "Rolled back")
    with engine.connect() as conn:
        assert count(conn, "intake_sessions", "user_id = :u", u=stranger) == 0
    assert _queued(producer, "intake") == []
    with pytest.raises(PermanentError, match="situation is empty"):
        _start(engine, producer, _user(engine), "  ")


def test_reconciler_finds_turns_whose_message_was_lost(engine: Engine, producer: Producer) -> None:
    user_id = _user(engine)
    service = _service(engine, producer)
    fresh = _start(engine, producer, user_id, "No question yet")
    answered = _start(engine, producer, user_id, "Answered, then the message was lost")
    service.process(IntakeStep(session_id=answered, user_id=user_id, step=1))
    _answer(engine, producer, answered, user_id, 1, "it was hard")
    waiting = _start(engine, producer, user_id, "Waiting for the person")
    service.process(IntakeStep(session_id=waiting, user_id=user_id, step=1))
    failed = _start(engine, producer, user_id, "Failed for good at step 1")
    service.record_failure(IntakeStep(session_id=failed, user_id=user_id, step=1), "blocked")
    done = _start(engine, producer, user_id, "I was glad, 8 of 10")
    for step in (1, 2, 3):
        service.process(IntakeStep(session_id=done, user_id=user_id, step=step))
        _answer(engine, producer, done, user_id, step, "glad, 8 of 10")
    service.process(IntakeStep(session_id=done, user_id=user_id, step=4))
    assert _row(engine, done)["is_complete"]
    with engine.begin() as conn:  # everything happened ten minutes ago (past the trigger)
        conn.execute(text("ALTER TABLE intake_sessions DISABLE TRIGGER USER"))
        conn.execute(text("UPDATE intake_sessions SET updated_at = now() - interval '10 minutes'"))
        conn.execute(text("ALTER TABLE intake_sessions ENABLE TRIGGER USER"))
    uow = UnitOfWork(make_session_factory(engine))
    with uow:
        due = uow.intake.due_turns(older_than_s=300, limit=100)
        recent = uow.intake.due_turns(older_than_s=3600, limit=100)
    assert sorted(due) == sorted([(fresh, user_id, 1), (answered, user_id, 2)])
    assert recent == []
    with uow:  # what `emotionviz status` shows
        states = uow.intake.state_counts()
    assert states == {
        "complete": 1,
        "failed": 1,
        "waiting_for_person": 1,
        "waiting_for_worker": 2,
    }
