"""Readiness checks: can this deployment take work? The database answers with its
schema at this release's migration head, the broker (and Redis, when the broker is
RabbitMQ) answers, and so does the object store where pictures live in one (MEDIA_URL).
Cheap enough to run every few seconds in every container: one connection and a one-row
read, one PING, one short LIST; no table is counted or scanned. They observe
only: embedded servers that are not running are reported, never started.

Used by ``emotionviz health`` (container health checks) and the worker's /readyz.
"""

from __future__ import annotations

import logging

from db import embedded
from db.readiness import DatabaseCheck, check_database, one_line
from workers.logging import scrub
from workers.settings import Settings

# One check's result; the database's own checks (db/readiness.py) return the same.
Check = DatabaseCheck


def _one_line(exc: BaseException) -> str:
    return scrub(one_line(exc))


def _database_url(settings: Settings) -> str | None:
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    postgres = next(s for s in embedded.status(settings.data_dir) if s.name == "postgres")
    return embedded.start_postgres(settings.data_dir) if postgres.running else None


def _redis_url(settings: Settings) -> str | None:
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    redis = next(s for s in embedded.status(settings.data_dir) if s.name == "redis")
    return embedded.redis_socket_url(settings.data_dir) if redis.running else None


def _not_running(var: str) -> str:
    return f"{var} is not set and the embedded server is not running (emotionviz services start)"


def check_redis(name: str, url: str | None, timeout_s: float) -> Check:
    import redis

    if url is None:
        return Check(name, False, _not_running("REDIS_URL"))
    try:
        from workers.messaging.redis_clients import client_for  # Sentinel too

        client = client_for(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        with client:
            client.ping()
    except (redis.RedisError, OSError) as exc:
        return Check(name, False, _one_line(exc))
    return Check(name, True, "answers")


def check_rabbitmq(url: str, timeout_s: float) -> Check:
    try:
        import pika
        import pika.exceptions
    except ImportError:
        return Check(
            "broker",
            False,
            "BROKER_URL is amqp:// but pika is not installed: "
            "pip install 'emotionviz-workers[rabbitmq]'",
        )
    # pika logs every connection step, and a refused one with a traceback: one line here.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    from workers.messaging.rabbitmq_state import quick_parameters

    servers = quick_parameters(url, timeout_s)  # several: any one answering will do
    try:
        pika.BlockingConnection(servers).close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        reason = _one_line(exc) if str(exc) else type(exc).__name__
        where = ",".join(f"{params.host}:{params.port}" for params in servers)
        return Check("broker", False, f"{where}: {reason}")
    return Check("broker", True, "answers")


def check_media(settings: Settings, timeout_s: float) -> Check | None:
    """The fleet's object store (MEDIA_URL=s3://) answers one LIST with our credentials;
    None for a local folder (this machine's disk, not a service)."""
    from workers import bootstrap

    result = bootstrap.check_media_store(settings, timeout_s)
    if result is None:
        return None
    ok, detail = result
    return Check("media", ok, scrub(detail))


def run_checks(settings: Settings, timeout_s: float) -> list[Check]:
    checks: list[Check] = [
        Check(c.name, c.ok, scrub(c.detail))
        for c in check_database(_database_url(settings), timeout_s, _not_running("DATABASE_URL"))
    ]
    media = check_media(settings, timeout_s)
    if media is not None:
        checks.append(media)
    redis_url = _redis_url(settings)
    broker_url = settings.broker_url.get_secret_value() if settings.broker_url else None
    if broker_url is None or broker_url == redis_url:
        checks.append(check_redis("broker", redis_url, timeout_s))
        return checks
    if broker_url.startswith("amqp"):
        checks.append(check_rabbitmq(broker_url, timeout_s))
    else:
        checks.append(check_redis("broker", broker_url, timeout_s))
    # Rate limits, counters and dead letters stay in REDIS_URL whatever the broker.
    checks.append(check_redis("redis", redis_url, timeout_s))
    return checks
