"""The intake conversation end to end: real worker processes, broker and database, the
gemini intake provider through the SDK against the emulator (INTAKE_MAX_STEPS=3)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.messages import IntakeStep
from tests.e2e.conftest import API_KEY, Harness
from workers.logging import log_ref
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.producer_api import ProducerAPI
from workers.settings import Settings

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def producer(harness: Harness) -> Iterator[ProducerAPI]:
    """The producer API as the API service uses it, on the harness's database and broker."""
    settings = Settings(_env_file=None, redis_namespace=harness.namespace)  # type: ignore[call-arg]
    broker = build_broker(settings, harness.redis_url)
    factory = make_session_factory(harness.engine)
    yield ProducerAPI(lambda: UnitOfWork(factory, Producer(broker)))
    broker.close()


def _marker() -> str:
    return "i" + uuid.uuid4().hex[:10]


def _user(harness: Harness, marker: str) -> uuid.UUID:
    with harness.engine.begin() as conn:
        return conn.execute(
            text(
                "INSERT INTO users (email, hashed_password, name) VALUES (:e, 'x', 'I') RETURNING id"
            ),
            {"e": f"{marker}@example.com"},
        ).scalar_one()


def _session(harness: Harness, session_id: uuid.UUID) -> dict[str, Any]:
    with harness.engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM intake_sessions WHERE id = :s"), {"s": session_id})
            .mappings()
            .one()
        )


def _processed(harness: Harness, session_id: uuid.UUID) -> int:
    """The session's messages the workers finished (one "intake step processed" each)."""
    return sum(
        1
        for line in harness.log_path.read_text(errors="replace").splitlines()
        if log_ref(session_id) in line and "intake step processed" in line
    )


def _wait_session(
    harness: Harness, session_id: uuid.UUID, questions: int, timeout: float = 20
) -> dict[str, Any]:
    """Until the session holds ``questions`` questions, or is complete (questions=0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = _session(harness, session_id)
        if (questions == 0 and row["is_complete"]) or (
            questions and len(row["conversation_history"]) >= questions
        ):
            return row
        time.sleep(0.05)
    raise AssertionError(
        f"session {session_id} did not reach {questions or 'completion'}: "
        f"{_session(harness, session_id)}\n{harness.log_path.read_text(errors='replace')[-3000:]}"
    )


def _start(harness: Harness, producer: ProducerAPI, marker: str) -> tuple[uuid.UUID, uuid.UUID]:
    user_id = _user(harness, marker)
    session_id = producer.start_intake(user_id, f"Situation {marker}: my flight was cancelled")
    return session_id, user_id


def _answer(
    harness: Harness, producer: ProducerAPI, session_id: uuid.UUID, user_id: uuid.UUID, step: int
) -> None:
    producer.submit_answer(session_id, user_id, step=step, answer=f"answer {step}: tired")


def test_conversation_from_first_question_to_a_visualized_entry(
    harness: Harness, producer: ProducerAPI
) -> None:
    marker = _marker()
    session_id, user_id = _start(harness, producer, marker)
    for step in (1, 2, 3):
        row = _wait_session(harness, session_id, step)
        assert row["current_step"] == step and row["conversation_history"][-1]["question"]
        assert row["ai_context"]["model"] == "gemini-3.5-flash"
        _answer(harness, producer, session_id, user_id, step)
    row = _wait_session(harness, session_id, 0)
    assert row["final_summary"] and row["completed_at"] is not None
    assert [e["answer"] for e in row["conversation_history"]] == [
        f"answer {s}: tired" for s in (1, 2, 3)
    ]
    with harness.engine.connect() as conn:
        entry = (
            conn.execute(
                text("SELECT * FROM emotion_entries WHERE intake_session_id = :s"),
                {"s": session_id},
            )
            .mappings()
            .one()
        )
    assert entry["source"] == "intake_flow" and entry["user_id"] == user_id
    visual = harness.wait_for(entry["id"])
    assert visual["status"] == "completed" and visual["image_url"]
    # Three questions + the completion, then the entry's analysis (the image prompt is
    # the model's own text, without the marker).
    assert harness.calls(marker)["analysis"] == 5


def test_two_workers_racing_on_one_step_store_one_question(
    harness: Harness, producer: ProducerAPI
) -> None:
    second = harness.start_worker(threads=4)
    try:
        marker = _marker()
        harness.fault(kind="slow", target="analysis", contains=marker, seconds=0.5, times=3)
        user_id = _user(harness, marker)
        with harness.engine.begin() as conn:
            session_id = conn.execute(
                text(
                    "INSERT INTO intake_sessions (user_id, initial_situation) "
                    "VALUES (:u, :s) RETURNING id"
                ),
                {"u": user_id, "s": f"Situation {marker}"},
            ).scalar_one()
        message = IntakeStep(session_id=session_id, user_id=user_id, step=1)
        for _ in range(3):
            harness.publish_message(message)
        _wait_session(harness, session_id, 1)
        # Every copy has finished (each logs its outcome): a second question stored by
        # a slower duplicate would be in the row by then.
        deadline = time.monotonic() + 15
        while _processed(harness, session_id) < 3:
            assert time.monotonic() < deadline, harness.log_path.read_text()[-3000:]
            time.sleep(0.1)
        row = _session(harness, session_id)
        assert len(row["conversation_history"]) == 1 and row["current_step"] == 1
    finally:
        harness.stop_worker(second)


def test_step_whose_answer_is_late_is_retried_then_served(
    harness: Harness, producer: ProducerAPI
) -> None:
    marker = _marker()
    session_id, user_id = _start(harness, producer, marker)
    _wait_session(harness, session_id, 1)
    # The API published step 2 before its answer committed (it should not; we survive it).
    harness.publish_message(IntakeStep(session_id=session_id, user_id=user_id, step=2))
    deadline = time.monotonic() + 15
    while not any(  # the worker tried step 2 and was refused: the answer comes later
        log_ref(session_id) in line and "answer to step 1 is not stored yet" in line
        for line in harness.log_path.read_text(errors="replace").splitlines()
    ):
        assert time.monotonic() < deadline, harness.log_path.read_text()[-3000:]
        time.sleep(0.05)
    with harness.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE intake_sessions SET conversation_history = jsonb_set("
                "conversation_history, '{0,answer}', '\"late answer, stressed\"') WHERE id = :s"
            ),
            {"s": session_id},
        )
    row = _wait_session(harness, session_id, 2)
    assert row["conversation_history"][0]["answer"] == "late answer, stressed"


def test_step_whose_answer_never_comes_is_rejected_with_a_reason(
    harness: Harness, producer: ProducerAPI
) -> None:
    marker = _marker()
    session_id, user_id = _start(harness, producer, marker)
    before = _wait_session(harness, session_id, 1)
    harness.publish_message(IntakeStep(session_id=session_id, user_id=user_id, step=2))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        row = _session(harness, session_id)
        if (row["ai_context"] or {}).get("last_error"):
            break
        time.sleep(0.1)
    assert "answer to step 1 is not stored yet" in row["ai_context"]["last_error"]
    assert row["conversation_history"] == before["conversation_history"]
    dead = [
        d for d in harness.dead_letters("intake") if d["args"][0]["session_id"] == str(session_id)
    ]
    assert len(dead) == 1 and dead[0]["args"][0]["step"] == 2


def test_unusable_model_output_fails_permanently_then_replays(
    harness: Harness, producer: ProducerAPI
) -> None:
    marker = _marker()
    harness.fault(kind="max_tokens", target="analysis", contains=marker, times=2)
    session_id, user_id = _start(harness, producer, marker)
    deadline = time.monotonic() + 15
    row = _session(harness, session_id)
    while time.monotonic() < deadline and not (row["ai_context"] or {}).get("last_error"):
        time.sleep(0.1)
        row = _session(harness, session_id)
    assert "MAX_TOKENS" in row["ai_context"]["last_error"]
    assert "after one repair attempt" in row["ai_context"]["last_error"]
    assert row["conversation_history"] == [] and not row["is_complete"]
    assert harness.calls(marker) == {"analysis": 2}  # the call and one repair, no retries
    # The operator replays the step; the fault is spent, so it goes on.
    harness.publish_message(IntakeStep(session_id=session_id, user_id=user_id, step=1))
    row = _wait_session(harness, session_id, 1)
    assert "last_error" not in row["ai_context"]


def test_malformed_intake_message_is_rejected_and_the_worker_goes_on(
    harness: Harness, producer: ProducerAPI
) -> None:
    marker = _marker()
    for args in ([{"session_id": "x"}], [{"session_id": str(uuid.uuid4()), "step": "1"}], [1, 2]):
        harness.publish_envelope("intake", "intake.step", args)
    session_id, _ = _start(harness, producer, marker)
    _wait_session(harness, session_id, 1)
    log = harness.log_path.read_text(errors="replace")
    assert "session_id: Input should be a valid UUID" in log
    assert "step: Input should be a valid integer" in log
    assert "intake.step expects one JSON object argument, got 2 args" in log


def test_api_key_never_appears_in_intake_logs_or_rows(
    harness: Harness, producer: ProducerAPI
) -> None:
    marker = _marker()
    harness.fault(kind="403", target="analysis", contains=marker)  # a failure is recorded
    session_id, _ = _start(harness, producer, marker)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not (_session(harness, session_id)["ai_context"] or {}):
        time.sleep(0.1)
    assert "API key was rejected" in _session(harness, session_id)["ai_context"]["last_error"]
    assert API_KEY not in harness.log_path.read_text(errors="replace")
    with harness.engine.connect() as conn:
        leaked, total = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE concat_ws(' ', conversation_history::text, "
                "ai_context::text, final_summary) LIKE :k), count(*) FROM intake_sessions"
            ),
            {"k": f"%{API_KEY}%"},
        ).one()
    assert total >= 1 and leaked == 0
