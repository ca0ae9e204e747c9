"""Fair dispatch with real workers (issue 23.2; docs/reliability.md, "Fairness"): one
person's import does not starve another's entry, the per-person cap holds, and an entry
taken in turn that fails is retried with its own message, paid once per attempt."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.messages import EntryCreated
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.messaging.redis_keys import queue_keys
from workers.settings import Settings

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def fair_harness(
    database_factory: DatabaseFactory, redis_server_url: str, tmp_path: Path
) -> Iterator[Harness]:
    """A harness whose worker each test starts itself (threads, settings)."""
    with running_harness(database_factory, redis_server_url, tmp_path, start=False) as h:
        yield h


def _person(h: Harness, marker: str, entries: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    with h.engine.begin() as conn:
        user = conn.execute(
            text(
                "INSERT INTO users (email, hashed_password, name) "
                "VALUES (:e, 'x', 'Fair') RETURNING id"
            ),
            {"e": f"{marker}-{uuid.uuid4().hex[:6]}@example.com"},
        ).scalar_one()
        ids = conn.execute(
            text(
                "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
                "SELECT :u, 'Situation ' || :m || ' number ' || g, ARRAY['joy'], 0.5 "
                "FROM generate_series(1, :n) g RETURNING id"
            ),
            {"u": user, "m": marker, "n": entries},
        ).scalars()
        return user, list(ids)


def _publish(h: Harness, user: uuid.UUID, entries: list[uuid.UUID]) -> None:
    """As an upstream Python service does: one unit of work (the dispatch recorded on
    each row, then the messages)."""
    broker = build_broker(
        Settings(_env_file=None, redis_namespace=h.namespace),  # type: ignore[call-arg]
        h.redis_url,
    )
    with UnitOfWork(make_session_factory(h.engine), Producer(broker)) as uow:
        for entry in entries:
            uow.publish(EntryCreated(entry_id=entry, user_id=user))
        uow.commit()
    assert uow.publish_error is None


def _completed(h: Harness, entries: list[uuid.UUID]) -> int:
    with h.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM visualizations "
                    "WHERE entry_id = ANY(:ids) AND status = 'completed'"
                ),
                {"ids": entries},
            ).scalar_one()
        )


def _wait_completed(h: Harness, entries: list[uuid.UUID], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _completed(h, entries) < len(entries):
        assert time.monotonic() < deadline, h.log_path.read_text(errors="replace")[-3000:]
        time.sleep(0.05)


@pytest.mark.slow
def test_one_persons_import_does_not_starve_another(fair_harness: Harness) -> None:
    h = fair_harness
    h.emulator.state.latency_analysis_s = 0.2
    h.emulator.state.latency_image_s = 0.2
    h.start_worker(threads=4)
    a_user, a_entries = _person(h, "fairA", 200)
    b_user, [b_entry] = _person(h, "fairB", 1)
    _publish(h, a_user, a_entries)
    _publish(h, b_user, [b_entry])  # its message is behind A's 200
    _wait_completed(h, [b_entry], seconds=30)
    a_done = _completed(h, a_entries)
    # First in, first out, B would come after all 200 (4 threads: ~20 s).
    assert a_done < 40, f"B finished after {a_done} of A's 200"
    assert h.calls("fairB") == {"analysis": 1, "image": 1}


@pytest.mark.slow
def test_the_per_person_cap_holds_and_every_entry_completes_once(fair_harness: Harness) -> None:
    h = fair_harness
    h.emulator.state.latency_analysis_s = 0.3
    h.emulator.state.latency_image_s = 0.3
    h.start_worker(threads=4, extra_env={"USER_MAX_IN_FLIGHT": "2"})
    user, entries = _person(h, "fairCap", 6)
    _publish(h, user, entries)
    most = 0
    deadline = time.monotonic() + 30
    while _completed(h, entries) < len(entries):
        assert time.monotonic() < deadline, h.log_path.read_text(errors="replace")[-3000:]
        with h.engine.connect() as conn:
            running = conn.execute(
                text(
                    "SELECT count(*) FROM visualizations "
                    "WHERE user_id = :u AND status = 'processing'"
                ),
                {"u": user},
            ).scalar_one()
        most = max(most, int(running))
        time.sleep(0.02)
    assert most == 2  # reached, never passed (4 threads would run 4)
    assert h.calls("fairCap") == {"analysis": 6, "image": 6}
    assert "person at the in-flight cap, deferred" in h.log_path.read_text(errors="replace")


@pytest.mark.slow
def test_an_entry_taken_in_turn_that_fails_is_retried_with_its_own_message(
    fair_harness: Harness,
) -> None:
    h = fair_harness
    a_user, a_entries = _person(h, "turnA", 3)
    b_user, [b_entry] = _person(h, "turnB", 1)
    _publish(h, a_user, a_entries)
    _publish(h, b_user, [b_entry])
    # B's picture fails once (a 500: transient). One thread: A's first token takes A's
    # first entry; the next one takes B's in turn (B waited longest), whose failure must
    # come back as B's own retry, not as A's message's.
    h.fault(kind="500", target="image", contains="turnB", times=1)
    h.start_worker(threads=1)
    _wait_completed(h, [*a_entries, b_entry], seconds=30)
    lines = [json.loads(x) for x in h.log_path.read_text().splitlines() if x.startswith("{")]
    events = [str(line.get("event")) for line in lines]
    assert "took a waiting entry in turn" in events
    assert "entry taken in turn failed, will retry" in events
    assert h.calls("turnB") == {"analysis": 1, "image": 2}  # the analysis was kept
    assert h.calls("turnA") == {"analysis": 3, "image": 3}
    assert h.dead_letters() == []


@pytest.mark.slow
def test_an_entry_deferred_by_the_daily_budget_comes_back_to_itself(
    fair_harness: Harness,
) -> None:
    """The budget's deferral comes back as its own entry's message (option own_entry),
    not as a token: with another person's entry pooled meanwhile, the deferred entry is
    the one processed when the wait ends ("the next day": the budget raised and the
    delayed message's eta brought forward)."""
    h = fair_harness
    a_user, [a_first, a_second] = _person(h, "budgetA", 2)
    # ~$0.04 an entry: a budget of $0.03 lets A's first finish and stops the second.
    tight = {"USER_DAILY_BUDGET_USD": "0.03", "BUDGET_CACHE_S": "0"}
    h.start_worker(threads=1, extra_env=tight)
    _publish(h, a_user, [a_first])
    _wait_completed(h, [a_first], seconds=30)
    _publish(h, a_user, [a_second])
    deadline = time.monotonic() + 30
    while "daily budget" not in ((h.visualization(a_second) or {}).get("error_message") or ""):
        assert time.monotonic() < deadline, h.log_path.read_text(errors="replace")[-3000:]
        time.sleep(0.05)
    h.stop_workers()  # its delayed message goes back to the delay queue
    # Another person's entry waits in the pool, its token still to come (as behind a
    # backlog): a token would take it; the deferred message must take its own entry.
    q_user, [q_entry] = _person(h, "budgetQ", 1)
    with h.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO visualizations (entry_id, user_id, dispatched_at) "
                "VALUES (:e, :u, now() + interval '1 day')"
            ),
            {"e": q_entry, "u": q_user},
        )
        conn.execute(text("INSERT INTO fair_turns (user_id) VALUES (:u)"), {"u": q_user})
        conn.execute(
            text("INSERT INTO fair_waiting (entry_id, user_id, lane) VALUES (:e, :u, 0)"),
            {"e": q_entry, "u": q_user},
        )
    keys = queue_keys(h.namespace, "visualizations")
    deferred = {
        key: json.loads(body)
        for key, body in h.redis.hgetall(keys.delayed_bodies).items()
        if json.loads(body)["args"][0]["entry_id"] == str(a_second)
    }
    ((key, message),) = deferred.items()
    assert message["options"]["own_entry"] is True and message["options"]["retries"] == 0
    message["options"]["eta"] = int(time.time() * 1000)  # the next day, now
    h.redis.hset(keys.delayed_bodies, key, json.dumps(message))
    h.start_worker(threads=1, extra_env={**tight, "USER_DAILY_BUDGET_USD": "100"})
    _wait_completed(h, [a_second], seconds=30)
    assert h.visualization(q_entry)["status"] == "pending"  # type: ignore[index]
    with h.engine.connect() as conn:
        pooled = conn.execute(text("SELECT entry_id FROM fair_waiting")).scalars().all()
    assert pooled == [q_entry]
    assert h.calls("budgetA") == {"analysis": 2, "image": 2}
    assert h.dead_letters() == []
