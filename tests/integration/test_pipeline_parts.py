"""Pipeline parts on real PostgreSQL and Redis: the service's claim and checkpoints
(local providers, in-process), producer paths, dead letters, reconcile, rate gates."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import dramatiq
import pytest
from dramatiq.rate_limits.backends import RedisBackend
from sqlalchemy import Engine, text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.analysis import Analysis, EntrySnapshot, ImageResult
from domain.errors import (
    LeaseHeldError,
    NotFoundError,
    OwnershipError,
    ProviderUnavailableError,
)
from domain.messages import EntryCreated
from domain.vocabulary import VisualizationStyle
from tests.integration.helpers import count, insert_entry, insert_user
from workers.messaging.dead_letters import DeadLetters
from workers.messaging.producer import Producer
from workers.messaging.redis_keys import queue_keys
from workers.providers.factory import Providers
from workers.providers.local import LocalAnalysisProvider, LocalImageProvider
from workers.providers.local_intake import LocalIntakeProvider
from workers.providers.ratelimit import RateGate
from workers.providers.storage import LocalImageStore
from workers.services.visualize import Outcome, VisualizationService, VisualizeLimits

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
        analytics = count(conn, "emotion_analytics", "user_id = :u", u=user_id)
    assert row.status == "completed" and row.style == "metaphor" and "sadness" in row.summary
    assert (tmp_path / row.image_url.removeprefix("http://m.test/")).exists()
    assert analytics == 3


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
    with UnitOfWork(factory) as uow:
        uow.visualizations.ensure_row(entry_id, user_id, None)
        first = uow.visualizations.claim(entry_id, lease_s=60)
        second = uow.visualizations.claim(entry_id, lease_s=60)
        uow.commit()
    assert first is not None and second is None
    service = _service(engine, tmp_path, LocalAnalysisProvider(), LocalImageProvider(64))
    with pytest.raises(LeaseHeldError) as held:
        service.process(EntryCreated(entry_id=entry_id, user_id=user_id))
    assert 50 < (held.value.retry_after_s or 0) <= 60
    with engine.begin() as conn:  # the holder died long ago
        conn.execute(
            text("UPDATE visualizations SET processing_started_at = now() - interval '2 minutes'")
        )
    assert service.process(EntryCreated(entry_id=entry_id, user_id=user_id)) is Outcome.COMPLETED
    with UnitOfWork(factory) as uow:  # the stale holder can no longer write
        assert not uow.visualizations.complete(first)


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
    assert len(listed) == 3 and listed[0]["actor"] == "entry.created"
    assert dead.replay("visualizations", ids=[listed[0]["message_id"]]) == 1
    assert broker.client.llen(f"{broker.namespace}:visualizations") == 1
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
