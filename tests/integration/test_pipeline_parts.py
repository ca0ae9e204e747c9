"""Pipeline parts on real PostgreSQL and Redis: the service's claim and checkpoints
(local providers, in-process), producer paths, dead letters, reconcile, rate gates."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.rate_limits.backends import RedisBackend
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.analysis import Analysis, EntrySnapshot, ImageResult
from domain.errors import (
    CrashLoopError,
    LeaseHeldError,
    NotFoundError,
    OwnershipError,
    ProviderUnavailableError,
)
from domain.messages import EntryCreated, IntakeStep
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import claim, count, insert_entry, insert_user
from workers.messaging.broker import build_broker
from workers.messaging.dead_letters import DeadLetters
from workers.messaging.producer import Producer
from workers.messaging.redis_keys import queue_keys
from workers.providers.factory import Providers
from workers.providers.local import LocalAnalysisProvider, LocalImageProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.providers.ratelimit import RateGate
from workers.providers.storage import LocalImageStore
from workers.services.analytics import drain_analytics_refresh_queue
from workers.services.leases import LeaseKeeper
from workers.services.visualize import Outcome, VisualizationService, VisualizeLimits
from workers.settings import Settings

pytestmark = pytest.mark.integration


class CountingAnalysis(LocalAnalysisProvider):
    def __init__(self) -> None:
        self.calls = 0

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle):  # type: ignore[no-untyped-def]
        self.calls += 1
        return super().analyse(entry, style)


class FlakyImages(LocalImageProvider):
    """Fails the first ``failures`` calls with a transient error, then draws."""

    def __init__(self, failures: int) -> None:
        super().__init__(size_px=128)
        self.failures, self.calls = failures, 0

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        self.calls += 1
        if self.calls <= self.failures:
            raise ProviderUnavailableError("image model overloaded (503)")
        return super().draw(entry, analysis, style)


def _service(
    engine: Engine, tmp_path: Path, analysis: object, images: object, lease_s: int = 60
) -> VisualizationService:
    factory = make_session_factory(engine)
    providers = Providers(  # type: ignore[arg-type]
        analysis, images, LocalImageStore(tmp_path, "http://m.test"), LocalIntakeProvider()
    )
    return VisualizationService(
        lambda: UnitOfWork(factory), providers, VisualizeLimits(lease_s, 64, 10_000_000, 10_000_000)
    )


def _entry(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    with engine.begin() as conn:
        user_id = insert_user(conn)
        return insert_entry(conn, user_id, emotions=["sadness", "fear"], intensity="0.80"), user_id


def test_service_completes_with_local_providers(engine: Engine, tmp_path: Path) -> None:
    entry_id, user_id = _entry(engine)
    service = _service(engine, tmp_path, LocalAnalysisProvider(), LocalImageProvider(128))
    message = EntryCreated(entry_id=entry_id, user_id=user_id, style=VisualizationStyle.METAPHOR)
    assert service.process(message) is Outcome.COMPLETED
    assert service.process(message) is Outcome.ALREADY_COMPLETED
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, style, image_url, summary FROM visualizations")
        ).one()
        queued = count(conn, "analytics_refresh_queue", "user_id = :u", u=user_id)
    assert row.status == "completed" and row.style == "metaphor" and "sadness" in row.summary
    assert (tmp_path / row.image_url.removeprefix("http://m.test/")).exists()
    assert queued == 1  # once: the duplicate completed nothing
    sessions = make_session_factory(engine)
    assert drain_analytics_refresh_queue(lambda: UnitOfWork(sessions), 10) == 1
    with engine.connect() as conn:
        assert count(conn, "emotion_analytics", "user_id = :u", u=user_id) == 3


def test_image_failure_keeps_the_analysis_checkpoint(engine: Engine, tmp_path: Path) -> None:
    entry_id, user_id = _entry(engine)
    analysis, images = CountingAnalysis(), FlakyImages(failures=1)
    service = _service(engine, tmp_path, analysis, images)
    message = EntryCreated(entry_id=entry_id, user_id=user_id)
    with pytest.raises(ProviderUnavailableError):
        service.process(message)
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT status, error_message, gemini_analysis IS NOT NULL AS analysed "
                "FROM visualizations"
            )
        ).one()
    assert row.status == "pending" and row.analysed and "will retry" in row.error_message
    assert service.process(message) is Outcome.COMPLETED
    assert (analysis.calls, images.calls) == (1, 2)


def test_claim_is_exclusive_and_expired_leases_are_reclaimed(
    engine: Engine, tmp_path: Path
) -> None:
    entry_id, user_id = _entry(engine)
    factory = make_session_factory(engine)
    first = claim(engine, entry_id, user_id, lease_s=60)
    second = claim(engine, entry_id, user_id, lease_s=60)
    assert first is not None and second is None
    service = _service(engine, tmp_path, LocalAnalysisProvider(), LocalImageProvider(64))
    with pytest.raises(LeaseHeldError) as held:
        service.process(EntryCreated(entry_id=entry_id, user_id=user_id))
    assert (held.value.retry_after_s or 0) == 60  # look again once the lease could run out
    with engine.begin() as conn:  # the holder died: nobody renewed its lease
        conn.execute(
            text("UPDATE visualizations SET lease_expires_at = now() - interval '1 second'")
        )
    assert service.process(EntryCreated(entry_id=entry_id, user_id=user_id)) is Outcome.COMPLETED
    with UnitOfWork(factory) as uow:  # the stale holder can no longer write
        assert not uow.entry_pipeline.complete(
            first, user_id=user_id, entry_moment=datetime.now(UTC)
        )


def test_the_heartbeat_renews_the_lease_and_a_dead_holders_row_is_reclaimed(
    engine: Engine,
) -> None:
    entry_id, user_id = _entry(engine)
    factory = make_session_factory(engine)
    held = claim(engine, entry_id, user_id, lease_s=10)
    assert held is not None and held.claim_count == 1

    def expires() -> float:
        with engine.connect() as conn:
            return float(
                conn.execute(
                    text("SELECT extract(epoch FROM lease_expires_at - now()) FROM visualizations")
                ).scalar_one()
            )

    assert 8 < expires() <= 10
    keeper = LeaseKeeper(lambda: UnitOfWork(factory), lease_s=300)
    keeper.hold(held)
    assert keeper.renew_now() == 1 and expires() > 290
    keeper.drop(held)
    with engine.begin() as conn:  # the process died: no renewal, the lease ran out
        conn.execute(text("UPDATE visualizations SET lease_expires_at = now() - interval '1 s'"))
    taken = claim(engine, entry_id, user_id, lease_s=10)
    assert taken is not None and taken.claim_count == 2  # the first never finished
    keeper.hold(held)  # the old holder's lease is gone: nothing to renew
    assert keeper.renew_now() == 0
    with UnitOfWork(factory) as uow:
        assert uow.visualizations.stuck_count() == 0


def test_the_heartbeat_warns_of_a_lease_taken_over_not_of_a_job_that_ended(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job that completes while the renewal's UPDATE runs drops its lease right after:
    that is no news. A lease whose row another worker claimed is."""
    from workers.services import leases

    warnings: list[dict[str, object]] = []
    monkeypatch.setattr(leases.log, "warning", lambda event, **kw: warnings.append(kw))
    factory = make_session_factory(engine)
    (first, user_a), (second, user_b) = _entry(engine), _entry(engine)
    ended, kept = claim(engine, first, user_a), claim(engine, second, user_b)
    assert ended is not None and kept is not None

    class UnitThatDrops(UnitOfWork):
        def __exit__(self, *exc: Any) -> None:
            super().__exit__(*exc)  # the renewal's UPDATE has run (it commits by itself)
            keeper.drop(ended)  # the job's own drop, after its completion committed

    keeper = LeaseKeeper(lambda: UnitThatDrops(factory), lease_s=300)

    with engine.begin() as conn:  # the first job completed before the UPDATE
        conn.execute(
            text("UPDATE visualizations SET status = 'completed' WHERE id = :i"), {"i": ended.id}
        )
    keeper.hold(ended)
    keeper.hold(kept)
    assert keeper.renew_now() == 1
    assert warnings == []
    with engine.begin() as conn:  # another worker took the second row over
        conn.execute(
            text("UPDATE visualizations SET processing_started_at = now() WHERE id = :i"),
            {"i": kept.id},
        )
    assert keeper.renew_now() == 0
    assert [w["taken_over"] for w in warnings] == [[str(kept.id)]]


def test_a_row_whose_worker_keeps_dying_fails_after_max_claims(
    engine: Engine, tmp_path: Path
) -> None:
    entry_id, user_id = _entry(engine)
    factory = make_session_factory(engine)
    for _ in range(3):  # three workers died holding it
        assert claim(engine, entry_id, user_id, lease_s=10) is not None
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE visualizations SET lease_expires_at = now() - interval '1 s'")
            )
    service = _service(engine, tmp_path, CountingAnalysis(), LocalImageProvider(64))
    with pytest.raises(CrashLoopError, match="stopped 3 times"):
        service.process(EntryCreated(entry_id=entry_id, user_id=user_id))
    assert service.providers.analysis.calls == 0  # type: ignore[attr-defined]
    service.mark_failed(entry_id, "the worker stopped 3 times while processing this entry")
    with UnitOfWork(factory) as uow:
        assert [e for e, _, _ in uow.visualizations.replay_failed([entry_id])] == [entry_id]
        uow.commit()
    assert service.process(EntryCreated(entry_id=entry_id, user_id=user_id)) is Outcome.COMPLETED
    with engine.connect() as conn:
        assert conn.execute(text("SELECT claim_count FROM visualizations")).scalar_one() == 0


def test_unknown_and_foreign_entries_change_nothing(engine: Engine, tmp_path: Path) -> None:
    entry_id, _owner = _entry(engine)
    service = _service(engine, tmp_path, LocalAnalysisProvider(), LocalImageProvider(64))
    with pytest.raises(NotFoundError, match="does not exist"):
        service.process(EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()))
    with engine.begin() as conn:
        stranger = insert_user(conn)
    with pytest.raises(OwnershipError, match="does not belong"):
        service.process(EntryCreated(entry_id=entry_id, user_id=stranger))
    with engine.connect() as conn:
        assert count(conn, "visualizations") == 0


def _declare_entry_created(broker: dramatiq.Broker) -> None:
    """The actor the messages name (the consumer refuses messages for unknown actors)."""
    dramatiq.actor(actor_name="entry.created", queue_name="visualizations", broker=broker)(
        lambda *args, **kwargs: None
    )


def test_publish_many_is_consumable_by_dramatiq(broker: dramatiq.Broker) -> None:
    _declare_entry_created(broker)
    messages = [EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()) for _ in range(1200)]
    ids = Producer(broker).publish_many(messages)
    assert len(set(ids)) == 1200
    consumer = broker.consume("visualizations", prefetch=2000, timeout=100)
    seen = []
    deadline = time.monotonic() + 10
    while len(seen) < 1200 and time.monotonic() < deadline:
        message = next(consumer)
        if message is not None:
            seen.append(message.args[0]["entry_id"])
            consumer.ack(message)
    consumer.close()
    assert seen == [str(m.entry_id) for m in messages]


def test_unit_of_work_publishes_only_after_commit(broker: dramatiq.Broker, engine: Engine) -> None:
    factory = make_session_factory(engine)
    queue = queue_keys(broker.namespace, "visualizations").ready
    with UnitOfWork(factory, Producer(broker)) as uow:
        uow.publish(EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()))
        # no commit: rolled back on exit
    assert broker.client.llen(queue) == 0
    with pytest.raises(RuntimeError), UnitOfWork(factory, Producer(broker)) as uow:
        uow.publish(EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()))
        raise RuntimeError("the request failed before commit")
    assert broker.client.llen(queue) == 0
    with UnitOfWork(factory, Producer(broker)) as uow:
        uow.session.execute(text("SELECT 1"))
        uow.publish(EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()))
        uow.publish(EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()))
        assert broker.client.llen(queue) == 0  # held until commit
        uow.commit()
    assert broker.client.llen(queue) == 2
    assert len(uow.published_ids) == 2


def test_dead_letters_list_replay_purge(broker: dramatiq.Broker) -> None:
    _declare_entry_created(broker)
    producer = Producer(broker)
    producer.publish_many(
        [EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4()) for _ in range(3)]
    )
    consumer = broker.consume("visualizations", prefetch=3, timeout=100)
    failed = 0
    while failed < 3:
        message = next(consumer)
        if message is not None:
            message.fail()
            consumer.nack(message)
            failed += 1
    consumer.close()
    dead = DeadLetters(broker.client, broker.namespace)
    listed = dead.entries("visualizations")
    assert len(listed) == 3 and listed[0].actor == "entry.created"
    assert listed[0].message_id is not None
    assert len(dead.replay("visualizations", ids=[listed[0].message_id])) == 1
    assert broker.client.llen(f"{broker.namespace}:visualizations") == 1
    assert dead.entries("visualizations", actor="intake.step") == []
    assert len(dead.entries("visualizations", newer_than_s=60)) == 2
    assert dead.entries("visualizations", older_than_s=60) == []
    assert dead.purge("visualizations") == 2
    assert dead.entries("visualizations") == []


def test_rate_gate_bounds_calls_in_flight_across_threads(
    redis_server_url: str, redis_namespace: str
) -> None:
    backend = RedisBackend(url=redis_server_url)
    gate = RateGate(
        backend,
        f"{redis_namespace}:gate",
        per_minute=10_000,
        max_concurrent=3,
        max_wait_s=10,
        slot_ttl_ms=10_000,
    )
    in_flight, peak, lock = 0, 0, threading.Lock()

    def call() -> None:
        nonlocal in_flight, peak
        with gate.slot():
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.05)
            with lock:
                in_flight -= 1

    threads = [threading.Thread(target=call) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3


def test_rate_gate_per_minute_limit_gives_up_with_a_transient_error(
    redis_server_url: str, redis_namespace: str
) -> None:
    gate = RateGate(
        RedisBackend(url=redis_server_url),
        f"{redis_namespace}:rpm",
        per_minute=2,
        max_concurrent=10,
        max_wait_s=0.5,
        slot_ttl_ms=10_000,
    )
    for _ in range(2):
        with gate.slot():
            pass
    with pytest.raises(ProviderUnavailableError, match="requests per minute"), gate.slot():
        pass


def test_a_commit_whose_broker_is_down_keeps_the_change_and_says_so(
    engine: Engine, redis_namespace: str
) -> None:
    settings = Settings(_env_file=None, redis_namespace=redis_namespace)  # type: ignore[call-arg]
    down = build_broker(settings, "redis://127.0.0.1:1/0")
    factory = make_session_factory(engine)
    with UnitOfWork(factory, Producer(down)) as uow:
        with engine.begin() as conn:
            user_id = insert_user(conn)
        session_id = uow.intake.create(user_id, "stored even though the broker is down")
        uow.publish(IntakeStep(session_id=session_id, user_id=uuid.uuid4(), step=1))
        uow.commit()
    assert uow.publish_error and "did not take" in uow.publish_error
    assert len(uow.unpublished) == 1
    with engine.connect() as conn:
        assert count(conn, "intake_sessions", "id = :s", s=session_id) == 1
    down.close()
