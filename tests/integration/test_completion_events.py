"""Completion events on real PostgreSQL (and Redis for the queue subscriber): the
triggers of migration 0006 announce exactly the terminal transitions, in the writer's
transaction; the dispatcher delivers the outbox to a real local webhook receiver that
verifies every signature, retries, dead-letters with the reason, and replays."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import jsonschema
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, text
from structlog.testing import capture_logs

from db.engine import connect, make_session_factory
from db.event_listener import CompletionWakeUps
from db.repositories.events import event_repository
from db.uow import UnitOfWork
from tests.integration.helpers import insert_entry, insert_user
from workers.devtools.webhook_receiver import WebhookReceiver, serve
from workers.messaging.redis_keys import queue_keys
from workers.observability.collector import StateCollector
from workers.observability.snapshot import SnapshotCache
from workers.providers.event_sinks import QueueSink, WebhookSink
from workers.services.events import (
    DeliveryPolicy,
    EventDispatcher,
    list_deliveries,
    replay_deliveries,
)

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"k" * 24).decode()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "messages.md"


def _schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas docs/messages.md publishes, by $id."""
    blocks = re.findall(r"```json\n(\{\n  \"\$schema\".*?)\n```", DOCS.read_text(), re.S)
    return {s["$id"]: s for s in map(json.loads, blocks)}


class Notes:
    """Every notification on the completion channels, in a thread (as an API would)."""

    def __init__(self, url: str) -> None:
        self.conn = connect(url, autocommit=True)
        for channel in ("visualization_done", "intake_done"):
            self.conn.execute(f"LISTEN {channel}")
        self.got: list[tuple[str, dict[str, Any]]] = []

    def take(self, timeout: float = 0.5) -> list[tuple[str, dict[str, Any]]]:
        for note in self.conn.notifies(timeout=timeout):
            self.got.append((note.channel, json.loads(note.payload)))
        got, self.got = self.got, []
        return got


@pytest.fixture
def notes(db_url: str) -> Iterator[Notes]:
    n = Notes(db_url)
    yield n
    n.conn.close()


def _visualization(engine: Engine, status: str = "processing") -> tuple[uuid.UUID, ...]:
    with engine.begin() as conn:
        user = insert_user(conn)
        entry = insert_entry(conn, user)
        viz = conn.execute(
            text(
                "INSERT INTO visualizations (entry_id, user_id, status) VALUES (:e, :u, :s) "
                "RETURNING id"
            ),
            {"e": entry, "u": user, "s": status},
        ).scalar_one()
    return entry, user, viz


def _set(engine: Engine, viz: uuid.UUID, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE visualizations SET status = :s WHERE id = :v"), {"s": status, "v": viz}
        )


def _events(engine: Engine) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(text("SELECT kind, payload FROM completion_events ORDER BY id"))
        ]  # type: ignore[misc]


def test_one_event_per_transition_into_completed_or_failed(engine: Engine, notes: Notes) -> None:
    entry, user, viz = _visualization(engine)
    assert notes.take(0.2) == [] and _events(engine) == []  # processing is not an end

    _set(engine, viz, "completed")
    got = notes.take()
    expected = {
        "entry_id": str(entry),
        "user_id": str(user),
        "status": "completed",
        "visualization_id": str(viz),
    }
    assert got == [("visualization_done", expected)]
    jsonschema.validate(got[0][1], _schemas()["visualization_done.notify"])
    assert _events(engine) == [("visualization.completed", expected)]

    # A no-op redelivery: the same status written again, other columns edited.
    _set(engine, viz, "completed")
    with engine.begin() as conn:
        conn.execute(text("UPDATE visualizations SET summary = 'x' WHERE id = :v"), {"v": viz})
    assert notes.take(0.3) == [] and len(_events(engine)) == 1

    # A replay that fails this time: pending, processing, failed -> a second event.
    for status in ("pending", "processing", "failed"):
        _set(engine, viz, status)
    assert notes.take() == [("visualization_done", {**expected, "status": "failed"})]
    assert [k for k, _ in _events(engine)] == ["visualization.completed", "visualization.failed"]


def test_a_rolled_back_completion_announces_nothing(engine: Engine, notes: Notes) -> None:
    _, _, viz = _visualization(engine)
    with engine.connect() as conn:
        conn.execute(
            text("UPDATE visualizations SET status = 'completed' WHERE id = :v"), {"v": viz}
        )
        conn.rollback()
    assert notes.take(0.3) == [] and _events(engine) == []


def test_a_row_inserted_finished_is_announced(engine: Engine, notes: Notes) -> None:
    entry, user, viz = _visualization(engine, status="failed")
    assert notes.take() == [
        (
            "visualization_done",
            {
                "entry_id": str(entry),
                "user_id": str(user),
                "status": "failed",
                "visualization_id": str(viz),
            },
        )
    ]


def test_an_intake_completion_names_its_entry_at_commit(engine: Engine, notes: Notes) -> None:
    with engine.begin() as conn:
        user = insert_user(conn)
        session = conn.execute(
            text(
                "INSERT INTO intake_sessions (user_id, initial_situation) VALUES (:u, 's') RETURNING id"
            ),
            {"u": user},
        ).scalar_one()
    with engine.begin() as conn:  # as the intake service: complete, then make the entry
        conn.execute(
            text(
                "UPDATE intake_sessions SET is_complete = true, completed_at = now() WHERE id = :s"
            ),
            {"s": session},
        )
        entry = insert_entry(conn, user, intake_session_id=session, source="intake_flow")
    got = notes.take()
    assert got == [
        ("intake_done", {"session_id": str(session), "user_id": str(user), "entry_id": str(entry)})
    ]
    jsonschema.validate(got[0][1], _schemas()["intake_done.notify"])
    with engine.begin() as conn:  # written again: no transition, no event
        conn.execute(
            text("UPDATE intake_sessions SET is_complete = true WHERE id = :s"), {"s": session}
        )
    assert notes.take(0.3) == []
    assert [k for k, _ in _events(engine)] == ["intake.completed"]


# --- delivery ---------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[tuple[WebhookReceiver, str]]:
    r = WebhookReceiver(SECRET)
    server = serve(r)
    yield r, f"http://127.0.0.1:{server.server_port}/hooks?src=emotionviz"
    server.shutdown()
    server.server_close()


POLICY = DeliveryPolicy(
    max_attempts=3, min_backoff_s=0.05, max_backoff_s=0.2, lease_s=30, poll_s=0.2
)


@pytest.fixture
def dispatchers(engine: Engine) -> Iterator[Callable[..., EventDispatcher]]:
    """Dispatchers with a webhook sink; each is closed at the end (its connection)."""
    made: list[EventDispatcher] = []

    def make(url: str, policy: DeliveryPolicy = POLICY) -> EventDispatcher:
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        made.append(
            EventDispatcher(
                lambda: UnitOfWork(make_session_factory(engine)),
                [WebhookSink(url, key, 2.0)],
                policy,
            )
        )
        return made[-1]

    yield make
    for dispatcher in made:
        dispatcher.close()


def _drain(dispatcher: EventDispatcher, passes: int = 40) -> None:
    stop = threading.Event()
    for _ in range(passes):
        report = dispatcher.run_pass()
        if not report.claimed and report.next_due_s is None:
            return
        stop.wait(0.06)


def test_each_event_reaches_the_webhook_once_signed(
    engine: Engine,
    receiver: tuple[WebhookReceiver, str],
    dispatchers: Callable[..., EventDispatcher],
) -> None:
    hook, url = receiver
    vizs = [_visualization(engine)[2] for _ in range(5)]
    for i, viz in enumerate(vizs):
        _set(engine, viz, "completed" if i % 2 else "failed")
    dispatcher = dispatchers(url)
    _drain(dispatcher)
    _drain(dispatcher)  # nothing left: a second pass sends nothing again
    assert hook.rejected == []
    got = hook.accepted()
    assert len(got) == 5 and len({r.event_id for r in got}) == 5
    schema = _schemas()["completion.event.v1"]
    for r in got:
        jsonschema.validate(r.body, schema)
        jsonschema.validate(r.body["data"], _schemas()["visualization_done.notify"])
        assert r.body["type"] == f"visualization.{r.body['data']['status']}"
    assert {r.body["data"]["visualization_id"] for r in got} == {str(v) for v in vizs}
    _rows, counts = list_deliveries(lambda: UnitOfWork(make_session_factory(engine)))
    assert counts == {"pending": 0, "delivered": 5, "dead": 0}


def test_a_receiver_failing_the_first_attempts_gets_it_on_retry(
    engine: Engine,
    receiver: tuple[WebhookReceiver, str],
    dispatchers: Callable[..., EventDispatcher],
) -> None:
    hook, url = receiver
    hook.respond = lambda _id, attempt: 503 if attempt <= 2 else 200
    _set(engine, _visualization(engine)[2], "completed")
    dispatcher = dispatchers(url)
    _drain(dispatcher)
    assert [r.status for r in hook.received] == [503, 503, 200]
    assert len(hook.accepted()) == 1 and hook.rejected == []
    _, counts = list_deliveries(lambda: UnitOfWork(make_session_factory(engine)))
    assert counts["delivered"] == 1


def test_a_receiver_failing_for_good_ends_dead_with_the_reason_and_replay_sends_again(
    engine: Engine,
    receiver: tuple[WebhookReceiver, str],
    dispatchers: Callable[..., EventDispatcher],
) -> None:
    hook, url = receiver
    hook.respond = lambda _id, _attempt: 500
    _set(engine, _visualization(engine)[2], "completed")
    uow = lambda: UnitOfWork(make_session_factory(engine))  # noqa: E731
    dispatcher = dispatchers(url)
    _drain(dispatcher)
    assert len(hook.received) == POLICY.max_attempts
    dead, counts = list_deliveries(uow, status="dead")
    assert counts == {"pending": 0, "delivered": 0, "dead": 1}
    assert (
        dead[0].last_error
        == "gave up after 3 attempts; last error: webhook answered 500 Internal Server Error"
    )

    hook.respond = lambda _id, _attempt: 204
    count, unknown = replay_deliveries(uow)
    assert (count, unknown) == (1, [])
    _drain(dispatcher)
    assert [r.status for r in hook.received][-1] == 204
    assert hook.received[-1].event_id == str(dead[0].event_id)  # the same event, again
    assert list_deliveries(uow)[1] == {"pending": 0, "delivered": 1, "dead": 0}
    # Replaying a delivered event by id sends it once more.
    assert replay_deliveries(uow, event_ids=[dead[0].event_id]) == (1, [])
    _drain(dispatcher)
    assert len(hook.accepted()) == 2 and hook.rejected == []


def test_an_unreachable_receiver_is_a_failed_attempt(
    engine: Engine, dispatchers: Callable[..., EventDispatcher]
) -> None:
    _set(engine, _visualization(engine)[2], "failed")
    dispatcher = dispatchers("http://127.0.0.1:9/none")  # discard port: refused
    _drain(dispatcher)
    dead, _ = list_deliveries(lambda: UnitOfWork(make_session_factory(engine)), status="dead")
    assert len(dead) == 1 and "webhook unreachable: ConnectionRefusedError" in (
        dead[0].last_error or ""
    )


def test_the_queue_subscriber_gets_the_event_as_a_dramatiq_message(
    engine: Engine, broker: dramatiq.Broker, redis_namespace: str
) -> None:
    _, _, viz = _visualization(engine)
    _set(engine, viz, "completed")
    dispatcher = EventDispatcher(
        lambda: UnitOfWork(make_session_factory(engine)),
        [QueueSink(broker, "upstream-events", "completion.event")],
        POLICY,
    )
    _drain(dispatcher)
    keys = queue_keys(redis_namespace, "upstream-events")
    bodies = [json.loads(b) for b in broker.client.hvals(keys.ready_bodies)]  # type: ignore[attr-defined]
    assert len(bodies) == 1
    message = bodies[0]
    assert (message["queue_name"], message["actor_name"]) == ("upstream-events", "completion.event")
    document = message["args"][0]
    jsonschema.validate(document, _schemas()["completion.event.v1"])
    assert message["message_id"] == document["id"]
    assert document["data"]["visualization_id"] == str(viz)


def test_the_wake_ups_hear_a_completion(db_url: str, engine: Engine) -> None:
    wake_ups = CompletionWakeUps(db_url)
    try:
        assert wake_ups.wait(0.05) == 0  # connects and listens
        _set(engine, _visualization(engine)[2], "completed")
        assert wake_ups.wait(2.0) >= 1
    finally:
        wake_ups.close()


# --- the CLI: emotionviz events list|replay (exit 0/1/2, one line, --json) ---------------


def _cli(db_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", "events", *args],
        env={**os.environ, "DATABASE_URL": db_url, "PYTHONPATH": str(Path.cwd())},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_events_list_and_replay_from_the_command_line(
    engine: Engine, db_url: str, tmp_path: Path, dispatchers: Callable[..., EventDispatcher]
) -> None:
    _set(engine, _visualization(engine)[2], "failed")
    _drain(dispatchers("http://127.0.0.1:9/none"))  # refused: dead after 3 attempts

    listed = _cli(db_url, tmp_path, "list", "--status", "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)
    assert data["counts"] == {"pending": 0, "delivered": 0, "dead": 1}
    (dead,) = data["deliveries"]
    assert dead["type"] == "visualization.failed" and dead["attempts"] == 3
    assert dead["last_error"].startswith(
        "gave up after 3 attempts; last error: webhook unreachable"
    )

    text_out = _cli(db_url, tmp_path, "list")
    assert text_out.returncode == 0 and "1 dead deliveries" in text_out.stdout.splitlines()[-1]

    replayed = _cli(db_url, tmp_path, "replay", "--json")
    assert replayed.returncode == 0 and json.loads(replayed.stdout) == {"replayed": 1}
    counts = list_deliveries(lambda: UnitOfWork(make_session_factory(engine)))[1]
    assert counts == {"pending": 1, "delivered": 0, "dead": 0}

    unknown = _cli(db_url, tmp_path, "replay", str(uuid.uuid4()))
    assert unknown.returncode == 2 and unknown.stdout == ""
    assert len(unknown.stderr.strip().splitlines()) == 1 and "no such event" in unknown.stderr
    bad = _cli(db_url, tmp_path, "replay", "not-an-id")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


# --- the review's defects: leases, per-subscriber fan-out, claims, listener, shutdown ---


def _uow_factory(engine: Engine) -> Callable[[], UnitOfWork]:
    return lambda: UnitOfWork(make_session_factory(engine))


def _run(dispatcher: EventDispatcher) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
    thread.start()
    return stop, thread


def test_a_slow_receiver_and_two_dispatchers_get_each_event_once(
    engine: Engine,
    receiver: tuple[WebhookReceiver, str],
    dispatchers: Callable[..., EventDispatcher],
) -> None:
    # A delivery takes 0.2 s (0.4 s if the other dispatcher's request is in the
    # receiver): a pass that sent its whole claim of 10 would still be sending when the
    # 1.5 s lease passed, and the other dispatcher would claim and send the rest again.
    hook, url = receiver
    hook.respond = lambda _id, _attempt: (time.sleep(0.2), 204)[1]
    policy = DeliveryPolicy(lease_s=1.5, per_delivery_s=0.75, poll_s=0.1, max_attempts=3)
    vizs = [_visualization(engine)[2] for _ in range(10)]
    for viz in vizs:
        _set(engine, viz, "completed")
    runs = [_run(dispatchers(url, policy)) for _ in range(2)]
    try:
        assert hook.wait_until(lambda h: len(h.accepted()) >= 10, timeout=30)
        time.sleep(2.0)  # past every lease: a late duplicate would arrive now
    finally:
        for stop, thread in runs:
            stop.set()
            thread.join(5)
    ids = [r.event_id for r in hook.received]
    assert len(ids) == 10 == len(set(ids)), "an event was sent twice"
    assert list_deliveries(_uow_factory(engine))[1] == {"pending": 0, "delivered": 10, "dead": 0}


def test_each_subscriber_gets_every_event_whoever_saw_it_first(
    engine: Engine,
    broker: dramatiq.Broker,
    redis_namespace: str,
    receiver: tuple[WebhookReceiver, str],
    dispatchers: Callable[..., EventDispatcher],
) -> None:
    # A rolling deploy: old processes deliver to the webhook only; a new one, with the
    # queue added, starts after they have handled the first events.
    hook, url = receiver
    webhook_only = dispatchers(url)
    with_queue = EventDispatcher(
        _uow_factory(engine), [QueueSink(broker, "upstream-events", "completion.event")], POLICY
    )
    first = [_visualization(engine)[2] for _ in range(3)]
    for viz in first:
        _set(engine, viz, "completed")
    _drain(webhook_only)
    assert len(hook.accepted()) == 3
    _drain(with_queue)  # saw nothing first, still gets all three
    later = [_visualization(engine)[2] for _ in range(2)]
    for viz in later:
        _set(engine, viz, "failed")
    _drain(with_queue)  # the new process sees these first
    _drain(webhook_only)
    queued = broker.client.hvals(queue_keys(redis_namespace, "upstream-events").ready_bodies)  # type: ignore[attr-defined]
    on_queue = {json.loads(b)["args"][0]["data"]["visualization_id"] for b in queued}
    on_hook = {r.body["data"]["visualization_id"] for r in hook.accepted()}
    everything = {str(v) for v in first + later}
    assert on_queue == everything and on_hook == everything
    assert len(hook.received) == 5 and len(queued) == 5


def test_an_event_that_commits_after_a_later_one_is_still_delivered(
    engine: Engine,
    receiver: tuple[WebhookReceiver, str],
    dispatchers: Callable[..., EventDispatcher],
) -> None:
    hook, url = receiver
    slow, fast = _visualization(engine)[2], _visualization(engine)[2]
    dispatcher = dispatchers(url, dataclasses.replace(POLICY, sweep_every_s=0.0))
    with engine.connect() as conn:  # takes the lower event id, commits last
        conn.execute(
            text("UPDATE visualizations SET status = 'completed' WHERE id = :v"), {"v": slow}
        )
        _set(engine, fast, "completed")
        _drain(dispatcher)  # the mark passes the slow one's id, not yet visible
        conn.commit()
    _drain(dispatcher)
    assert {r.body["data"]["visualization_id"] for r in hook.accepted()} == {str(slow), str(fast)}


def test_a_claim_from_before_a_replay_records_nothing(engine: Engine) -> None:
    _set(engine, _visualization(engine)[2], "completed")
    uow = _uow_factory(engine)
    with uow() as u:
        repo = event_repository(u)
        repo.fan_out(["webhook"], 10, 600)
        (stale,) = repo.claim(["webhook"], 10, lease_s=0.0)
        u.commit()
    # Sent, but slow to answer: meanwhile the operator replays and another claims it.
    assert replay_deliveries(uow, event_ids=[stale.event_id]) == (1, [])
    with uow() as u:
        (fresh,) = event_repository(u).claim(["webhook"], 10, lease_s=30.0)
        u.commit()
    assert fresh.attempts == stale.attempts == 1  # the count alone cannot tell them apart
    with uow() as u:
        repo = event_repository(u)
        assert repo.retry(stale, 600.0, "late answer") is False
        assert repo.delivered(fresh) is True
        u.commit()
    assert list_deliveries(uow)[1] == {"pending": 0, "delivered": 1, "dead": 0}


class Blackhole:
    """A TCP port that completes the handshake and never answers (a firewalled host
    would not even do that; the client waits the same)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"postgresql://postgres@127.0.0.1:{self.sock.getsockname()[1]}/postgres"


def test_the_wake_ups_give_up_connecting_to_a_silent_host_and_back_off() -> None:
    hole = Blackhole()
    wake_ups = CompletionWakeUps(hole.url, connect_timeout_s=2)
    try:
        started = time.monotonic()
        assert wake_ups.wait(0.1) == 0  # never raises: a listener is only a nudge
        assert time.monotonic() - started < 4, "connect_timeout did not apply"
        assert wake_ups.listening is False and wake_ups.problem
        started = time.monotonic()
        assert wake_ups.wait(0.2) == 0  # within the backoff: no new attempt, just a sleep
        assert 0.15 < time.monotonic() - started < 1.0
    finally:
        wake_ups.close()
        hole.sock.close()


def test_a_broken_listener_is_logged_once_and_delivery_goes_on_by_polling(
    engine: Engine,
    receiver: tuple[WebhookReceiver, str],
    dispatchers: Callable[..., EventDispatcher],
) -> None:
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    refused = f"postgresql://postgres@127.0.0.1:{free.getsockname()[1]}/postgres"
    free.close()  # nothing listens there: every connect is refused at once
    hook, url = receiver
    dispatcher = dispatchers(url)
    dispatcher.wake_ups = CompletionWakeUps(refused)
    with capture_logs() as logs:
        stop, thread = _run(dispatcher)
        try:
            time.sleep(1.2)  # several polls (0.2 s) and reconnection attempts
            _set(engine, _visualization(engine)[2], "completed")
            assert hook.wait_until(lambda h: len(h.accepted()) == 1, timeout=5)
        finally:
            stop.set()
            thread.join(5)
    events = [entry["event"] for entry in logs]
    assert events.count("event wake-ups unavailable; polling") == 1
    assert "event delivery paused" not in events and "event delivery resumed" not in events


def test_stopping_the_dispatcher_is_quick_and_closes_its_listen_connection(
    engine: Engine,
    db_url: str,
    receiver: tuple[WebhookReceiver, str],
    dispatchers: Callable[..., EventDispatcher],
) -> None:
    _, url = receiver
    dispatcher = dispatchers(url, dataclasses.replace(POLICY, poll_s=5.0))
    wake_ups = CompletionWakeUps(db_url)
    dispatcher.wake_ups = wake_ups
    stop, thread = _run(dispatcher)
    deadline = time.monotonic() + 10
    while not wake_ups.listening and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wake_ups.listening
    pid = wake_ups._connection.info.backend_pid  # type: ignore[union-attr]
    time.sleep(0.3)  # into its 5 s idle wait
    started = time.monotonic()
    stop.set()
    thread.join(2.0)
    assert not thread.is_alive() and time.monotonic() - started < 1.0  # was 4.7 s
    with engine.connect() as conn:
        for _ in range(40):  # the backend exits just after the client closed
            alive = conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
            ).scalar_one()
            if not alive:
                break
            time.sleep(0.05)
    assert alive == 0, "the LISTEN connection was left open"


def test_the_purge_warns_of_deliveries_that_never_arrived(engine: Engine) -> None:
    with engine.begin() as conn:
        old = conn.execute(
            text(
                "INSERT INTO completion_events (kind, payload, created_at) "
                "VALUES ('visualization.completed', '{}', now() - interval '8 days') RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "INSERT INTO event_deliveries (event_id, subscriber, status) "
                "VALUES (:e, 'webhook', 'dead'), (:e, 'queue', 'pending')"
            ),
            {"e": old},
        )
    dispatcher = EventDispatcher(_uow_factory(engine), [], POLICY)
    with capture_logs() as logs:
        assert dispatcher.purge_if_due() == 1
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"] == "completion events deleted before they were delivered"
    assert (warning["events"], warning["pending"], warning["dead"]) == (1, 1, 1)


def test_a_bad_webhook_port_is_a_one_line_config_error(db_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", "events", "list"],
        env={
            **os.environ,
            "DATABASE_URL": db_url,
            "PYTHONPATH": str(Path.cwd()),
            "EVENTS_WEBHOOK_URL": "https://hooks.example:44x/in?token=sekrit",
            "EVENTS_WEBHOOK_SECRET": SECRET,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "the port is not a number" in done.stderr and "sekrit" not in done.stderr


def test_the_metrics_count_the_deliveries_pending_and_dead(
    engine: Engine, dispatchers: Callable[..., EventDispatcher]
) -> None:
    for _ in range(2):
        _set(engine, _visualization(engine)[2], "failed")
    _drain(dispatchers("http://127.0.0.1:9/none"))  # refused: both dead
    _set(engine, _visualization(engine)[2], "completed")
    with _uow_factory(engine)() as u:  # one more, given its row but not yet sent
        event_repository(u).fan_out(["webhook"], 10, 600)
        u.commit()

    def no_broker() -> Any:
        raise ConnectionError("not measured here")

    registry = CollectorRegistry()
    registry.register(StateCollector(SnapshotCache(no_broker, _uow_factory(engine)).get))
    exposed = generate_latest(registry).decode()
    assert 'emotionviz_event_deliveries{state="dead"} 2.0' in exposed
    assert 'emotionviz_event_deliveries{state="pending"} 1.0' in exposed
