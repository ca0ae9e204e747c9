"""A Redis that cannot answer inside a job, on real parts: the rate gate's acquire on a
port where nothing listens and on an exhausted blocking pool raises the transient
ProviderUnavailableError (no password from the URL in it), a failed release only logs,
and a job whose gate cannot reach Redis is retried as a transient failure (one warning
line, no traceback) and counted as a server_error, on real PostgreSQL."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
import redis
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Retries
from prometheus_client import REGISTRY
from sqlalchemy import Engine, text
from structlog.testing import capture_logs

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.errors import ProviderUnavailableError
from domain.failures import failure_class
from domain.messages import EntryCreated
from tests.integration.helpers import insert_entry, insert_user
from workers.entrypoints.actors import ActorDependencies, declare_actors
from workers.messaging.redis_clients import pooled_client
from workers.providers.factory import build_providers
from workers.providers.ratelimit import RateGate
from workers.services.visualize import VisualizationService, VisualizeLimits
from workers.settings import Settings

pytestmark = pytest.mark.integration

PASSWORD = "s3cret-redis-password"
POOL_WAIT_S = 0.3


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound but never listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _gate(client: redis.Redis, key: str, *, max_wait_s: float = 5) -> RateGate:
    return RateGate(
        client,
        key,
        per_minute=1000,
        max_concurrent=10,
        max_wait_s=max_wait_s,
        slot_ttl_ms=30_000,
    )


def test_a_gate_whose_redis_refuses_raises_a_transient_error_without_the_password(
    closed_port: int, redis_namespace: str
) -> None:
    client = pooled_client(f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0", 4)
    gate = _gate(client, f"{redis_namespace}:ratelimit:some-model")
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError) as raised, gate.slot():
        pytest.fail("admitted without Redis")
    reason = str(raised.value)
    assert reason.startswith("Redis unavailable for the rate gate of some-model: ")
    assert "Connection refused" in reason and str(closed_port) in reason
    assert PASSWORD not in reason
    assert raised.value.retry_after_s is None  # Dramatiq's backoff, not the gate's wait
    assert failure_class(reason) == "server_error"  # not "other", not "rate_limited"
    assert time.monotonic() - started < 2  # refused at once, not after max_wait_s
    client.close()


def test_an_exhausted_pool_raises_the_transient_error_after_its_wait(
    redis_server_url: str, redis_namespace: str
) -> None:
    client = pooled_client(redis_server_url, 1, wait_s=POOL_WAIT_S)
    gate = _gate(client, f"{redis_namespace}:ratelimit:pooled-model")
    with gate.slot():  # the pool works
        pass
    held = client.connection_pool.get_connection()  # another user holds the only one
    try:
        started = time.monotonic()
        with (
            pytest.raises(ProviderUnavailableError, match="No connection available"),
            gate.slot(),
        ):
            pytest.fail("admitted without a connection")
        assert POOL_WAIT_S <= time.monotonic() - started < POOL_WAIT_S + 2
    finally:
        client.connection_pool.release(held)
    with gate.slot():  # and works again once the connection is back
        pass
    client.close()


def test_a_failed_release_logs_a_warning_and_leaves_the_slot_to_its_ttl(
    redis_server_url: str, redis_namespace: str
) -> None:
    key = f"{redis_namespace}:ratelimit:release-model"
    client = pooled_client(redis_server_url, 1, wait_s=POOL_WAIT_S)
    observer = redis.Redis.from_url(redis_server_url)
    gate = _gate(client, key)
    held: Any = None
    with (
        capture_logs() as logs,
        pytest.raises(ValueError, match="the call's own error"),
        gate.slot(),
    ):
        held = client.connection_pool.get_connection()  # the release finds none free
        raise ValueError("the call's own error")
    client.connection_pool.release(held)
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert [line["event"] for line in warnings] == [
        "could not release a rate-limit slot; it frees itself when its ttl runs out"
    ]
    assert warnings[0]["gate"] == "release-model" and warnings[0]["ttl_s"] == 30.0
    assert "No connection available" in warnings[0]["reason"]
    # Still held, until its expiry (Redis's clock, in microseconds) about 30 s from now.
    ((_, expires_us),) = observer.zrange(f"{key}:holders", 0, -1, withscores=True)
    seconds, micros = observer.time()
    assert 25 < (expires_us - (int(seconds) * 1_000_000 + int(micros))) / 1e6 <= 30
    observer.close()
    client.close()


def test_a_job_whose_rate_gate_cannot_reach_redis_is_retried_as_a_transient_failure(
    engine: Engine, tmp_path: Path, closed_port: int, redis_namespace: str
) -> None:
    model = f"redisfail-{uuid.uuid4().hex[:8]}"
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        provider="gemini",
        gemini_api_key="test-api-key-not-used",
        analysis_model=model,
        media_dir=tmp_path,
        redis_namespace=redis_namespace,
        max_retries=1,
        min_backoff_ms=5,
        max_backoff_ms=20,
    )
    # The factory's providers, rate gates and Gemini client, on our pooled client; the
    # gate fails before any request could be sent.
    providers = build_providers(
        settings, pooled_client(f"redis://:{PASSWORD}@127.0.0.1:{closed_port}/0", 4)
    )
    factory = make_session_factory(engine)
    service = VisualizationService(
        lambda: UnitOfWork(factory), providers, VisualizeLimits(60, 64, 10_000_000, 10_000_000)
    )
    broker = StubBroker(middleware=[Retries(max_retries=1, min_backoff=5), CurrentMessage()])
    broker.emit_after("process_boot")
    counted: list[str] = []
    deps = ActorDependencies(
        visualization=lambda: service,
        intake=lambda: None,  # type: ignore[arg-type, return-value]
        recompute=lambda message: None,  # type: ignore[arg-type, return-value]
        reconcile=lambda: None,  # type: ignore[arg-type, return-value]
        collect_media_garbage=lambda: (0, 0),
        publisher=lambda: None,  # type: ignore[arg-type, return-value]
        count=counted.append,
    )
    actors = declare_actors(broker, settings, deps)
    with engine.begin() as conn:
        user_id = insert_user(conn)
        entry_id = insert_entry(conn, user_id)

    def errors() -> float:
        labels = {"model": model, "error_class": "server_error"}
        return REGISTRY.get_sample_value("emotionviz_provider_errors_total", labels) or 0.0

    worker = dramatiq.Worker(broker, worker_timeout=10, worker_threads=1)
    with capture_logs() as logs:
        actors.entry_created.send(EntryCreated(entry_id=entry_id, user_id=user_id).to_payload())
        worker.start()
        try:
            broker.join(EntryCreated.queue_name, fail_fast=False, timeout=10_000)
        finally:
            worker.stop()
            broker.close()

    assert counted == ["retries"]  # retried once, then given up (max_retries=1)
    assert errors() == 2  # each attempt counted as a server_error, not "other"
    events = [line["event"] for line in logs]
    assert "unexpected error, will retry" not in events
    (retry,) = [line for line in logs if line["event"] == "transient failure, will retry"]
    assert retry["log_level"] == "warning" and "exc_info" not in retry
    assert retry["reason"].startswith(f"Redis unavailable for the rate gate of {model}: ")
    assert "Connection refused" in retry["reason"]
    with engine.connect() as conn:
        status, reason = conn.execute(
            text("SELECT status, error_message FROM visualizations WHERE entry_id = :e"),
            {"e": entry_id},
        ).one()
    assert status == "failed"
    assert reason.startswith("gave up after 2 attempts; last error: Redis unavailable")
    assert PASSWORD not in reason and failure_class(reason) == "server_error"
