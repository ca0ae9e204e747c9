"""Which Sentinel deployments a worker watches for failovers (issue 22.1 review): the
broker's, where a failover loses enqueues (BROKER_URL, else REDIS_URL, as the broker
builds its client), and REDIS_URL's when it is another deployment; each once."""

from __future__ import annotations

import pytest

from workers.devtools.replication_link import free_port
from workers.entrypoints.failover_watch import FailoverWatchMiddleware, urls_to_watch
from workers.settings import load_settings

BROKER = "redis+sentinel://:pw@b1:26379,b2:26379/broker"
OTHER = "redis+sentinel://:pw@r1:26379,r2:26379/app"
# The broker's deployment again: another db, the sentinels in another order, one left out.
SAME_AS_BROKER = "redis+sentinel://:pw@b2:26379/broker/3"
# The same service name on other sentinels: another deployment.
NAMESAKE = "redis+sentinel://:pw@n1:26379/broker"
PLAIN = "redis://127.0.0.1:6379/0"
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.mark.parametrize(
    ("redis_url", "broker_url", "watched"),
    [
        (OTHER, None, [OTHER]),  # one Redis for everything, behind Sentinel
        (PLAIN, BROKER, [BROKER]),  # the broker alone behind Sentinel: it is watched
        (None, BROKER, [BROKER]),  # REDIS_URL unset (embedded): the broker still
        (OTHER, BROKER, [BROKER, OTHER]),  # two deployments: both, the broker first
        (SAME_AS_BROKER, BROKER, [BROKER]),  # one deployment named twice: once
        (NAMESAKE, BROKER, [BROKER, NAMESAKE]),
        (OTHER, AMQP, [OTHER]),  # RabbitMQ: only REDIS_URL can fail over
        (PLAIN, AMQP, []),
        (PLAIN, None, []),
        (None, None, []),
    ],
)
def test_the_broker_and_a_separate_redis_are_watched(
    redis_url: str | None, broker_url: str | None, watched: list[str]
) -> None:
    settings = load_settings(_env_file=None, redis_url=redis_url, broker_url=broker_url)
    assert urls_to_watch(settings) == watched


def test_the_middleware_starts_one_watch_per_deployment_and_stops_them() -> None:
    # Nobody listens on these ports: the watches find no primary, and keep trying.
    broker = f"redis+sentinel://127.0.0.1:{free_port()}/broker"
    other = f"redis+sentinel://127.0.0.1:{free_port()}/app"
    settings = load_settings(
        _env_file=None, redis_url=other, broker_url=broker, redis_sentinel_poll_s=0.05
    )
    middleware = FailoverWatchMiddleware(settings)
    middleware.after_worker_boot(None, None)
    try:
        assert [w.where for w in middleware.watches] == [
            broker.split("//")[1] + "/0",
            other.split("//")[1] + "/0",
        ]
    finally:
        middleware.before_worker_shutdown(None, None)
    assert all(not w._thread or not w._thread.is_alive() for w in middleware.watches)
