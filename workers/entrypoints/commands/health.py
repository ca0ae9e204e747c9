"""``emotionviz health``: the container health check.

Exit 0 when the database answers, the broker answers and the schema is at Alembic head;
exit 1 with one line naming what failed. Cheap enough to run every few seconds in every
container: one connection and a one-row read (``alembic_version``), one PING; no table
is counted or scanned. It observes only: embedded servers that are not running are
reported, never started.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

from sqlalchemy.engine import make_url

from db import embedded
from db.engine import normalise_url
from workers.logging import scrub
from workers.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return scrub(text)[:300]


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


def check_database(url: str | None, timeout_s: float) -> list[Check]:
    """The database answers, and its schema is at the head this release ships."""
    import psycopg

    from db import migrate

    if url is None:
        return [
            Check("database", False, _not_running("DATABASE_URL")),
            Check("schema", False, "unknown (no database)"),
        ]
    conninfo = make_url(normalise_url(url)).set(drivername="postgresql")
    try:
        with psycopg.connect(
            conninfo.render_as_string(hide_password=False),
            connect_timeout=max(2, round(timeout_s)),  # libpq's minimum is 2 s
            application_name="emotionviz-health",
            options=f"-c statement_timeout={int(timeout_s * 1000)}",
            autocommit=True,
        ) as conn:
            try:
                rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
            except psycopg.errors.UndefinedTable:
                rows = None
    except psycopg.Error as exc:
        return [
            Check("database", False, _one_line(exc)),
            Check("schema", False, "unknown (database unreachable)"),
        ]
    database = Check("database", True, "answers")
    heads = sorted(migrate.head_revisions())
    if rows is None:
        return [database, Check("schema", False, "not migrated: run emotionviz migrate")]
    current = sorted(str(row[0]) for row in rows)
    if current != heads:
        return [
            database,
            Check(
                "schema",
                False,
                f"at {','.join(current) or 'base'}, this release's head is {','.join(heads)}: "
                "run emotionviz migrate",
            ),
        ]
    return [database, Check("schema", True, f"at head {','.join(heads)}")]


def check_redis(name: str, url: str | None, timeout_s: float) -> Check:
    import redis

    if url is None:
        return Check(name, False, _not_running("REDIS_URL"))
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )
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
    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = timeout_s
    params.blocked_connection_timeout = timeout_s
    try:
        pika.BlockingConnection(params).close()
    except (pika.exceptions.AMQPError, OSError) as exc:
        reason = _one_line(exc) if str(exc) else type(exc).__name__
        return Check("broker", False, f"{params.host}:{params.port}: {reason}")
    return Check("broker", True, "answers")


def run_checks(settings: Settings, timeout_s: float) -> list[Check]:
    checks = check_database(_database_url(settings), timeout_s)
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


def cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    checks = run_checks(settings, args.timeout)
    healthy = all(c.ok for c in checks)
    if args.json:
        document = {"ok": healthy, "checks": [asdict(c) for c in checks]}
        sys.stdout.write(json.dumps(document) + "\n")
    elif healthy:
        sys.stdout.write("healthy: " + "; ".join(f"{c.name} {c.detail}" for c in checks) + "\n")
    else:
        failed = "; ".join(f"{c.name}: {c.detail}" for c in checks if not c.ok)
        sys.stderr.write(f"emotionviz health: {failed}\n")
    return 0 if healthy else 1


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 60:
        raise argparse.ArgumentTypeError(f"not a number of seconds in (0, 60]: {value!r}")
    return seconds


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "health",
        cmd_health,
        "exit 0 if the database and broker answer and the schema is at head, else 1 "
        "with one line naming what failed (container health checks)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--timeout",
        type=_seconds,
        default=3.0,
        metavar="S",
        help="seconds each check may take (default 3)",
    )
