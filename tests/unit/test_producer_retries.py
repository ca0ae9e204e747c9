"""The producer retries a broker that drops the connection, then gives up with our
error (pure: the broker is a fake that fails on demand)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from domain.errors import BrokerUnavailableError
from domain.messages import EntryCreated
from workers.messaging import producer as producer_module
from workers.messaging.producer import Producer

pytestmark = pytest.mark.unit


class FlakyBroker:
    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    def enqueue(self, message: Any, *, delay: int | None = None) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise redis.ConnectionError("Connection reset by peer")
        return message


def _message() -> EntryCreated:
    return EntryCreated(entry_id=uuid.uuid4(), user_id=uuid.uuid4())


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_module, "PUBLISH_MAX_SECONDS", 5.0)


def test_a_dropped_connection_is_published_again() -> None:
    broker = FlakyBroker(failures=2)
    Producer(broker).publish(_message())  # type: ignore[arg-type]
    assert broker.calls == 3


def _publish_failures() -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("emotionviz_publish_failures_total") or 0.0


def test_a_broker_that_stays_down_gives_our_error_and_is_counted() -> None:
    broker = FlakyBroker(failures=100)
    before = _publish_failures()
    with pytest.raises(BrokerUnavailableError, match="after 4 attempts"):
        Producer(broker).publish(_message())  # type: ignore[arg-type]
    assert broker.calls == producer_module.PUBLISH_ATTEMPTS
    assert _publish_failures() == before + 1
