"""The CLI's contract, as a table: every expected failure exits 1 (the operation failed)
or 2 (bad input or configuration) with exactly one line on stderr and no traceback;
--json reports parse. Run as real processes against the test's PostgreSQL and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from tests.conftest import RUN_ID, DatabaseFactory
from workers.messaging.redis_keys import queue_keys

pytestmark = pytest.mark.integration

MISSING = str(uuid.UUID(int=1))


@pytest.fixture(scope="module")
def cli_env(database_factory: DatabaseFactory, redis_server_url: str) -> Iterator[dict[str, str]]:
    """One database and Redis namespace for the module: these commands only read, or
    fail before they write (the dead-letter test cleans up after itself)."""
    name, url = database_factory.create()
    namespace = f"evt:{RUN_ID}:cli-{uuid.uuid4().hex[:6]}"
    yield {
        "DATABASE_URL": url,
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": namespace,
        "PROVIDER": "local",
        "PYTHONPATH": str(Path.cwd()),
        "LOG_FORMAT": "json",
    }
    database_factory.drop(name)
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


# (arguments, settings overriding the test's, expected exit code, text in the line)
FAILURES = [
    (["enqueue", "entry", "not-a-uuid"], {}, 2, "not an id"),
    (["replay", "not-a-uuid"], {}, 2, "not an id"),
    (["job", "not-a-uuid"], {}, 2, "not an id"),
    (["analytics", "recompute", "--period", "week", "--user", "x"], {}, 2, "not an id"),
    (
        [
            "analytics",
            "recompute",
            "--period",
            "week",
            "--from",
            "2026-02-01",
            "--to",
            "2026-01-01",
        ],
        {},
        2,
        "is after --to",
    ),
    (["analytics", "recompute", "--period", "week", "--from", "Feb 1"], {}, 2, "not a date"),
    (["worker", "--processes", "0"], {}, 2, "must be 1 or more"),
    (["worker", "--threads", "many"], {}, 2, "not a whole number"),
    (["worker"], {"PROVIDER": "gemini", "GEMINI_API_KEY": ""}, 2, "needs GEMINI_API_KEY"),
    (["status"], {"WORKER_THREADS": "lots"}, 2, "WORKER_THREADS"),
    (["status"], {"DATABASE_URL": "postgresql://u:pw@[broken"}, 2, "DATABASE_URL"),
    (["status"], {"DATABASE_URL": "mysql://u@localhost/x"}, 2, "DATABASE_URL"),
    (["status"], {"REDIS_URL": "http://localhost:6379"}, 2, "REDIS_URL"),
    (["status"], {"REDIS_URL": "redis://127.0.0.1:1/0"}, 1, "Redis is unreachable"),
    (
        ["status"],
        {"DATABASE_URL": "postgresql://postgres:pw@127.0.0.1:1/x"},
        1,
        "database unavailable",
    ),
    (["enqueue", "entry", MISSING], {}, 1, "does not exist"),
    (["enqueue", "intake", MISSING], {}, 1, "does not exist"),
    (["job", MISSING], {}, 1, "does not exist"),
    (["job", "--session", MISSING], {}, 1, "does not exist"),
    (["job"], {}, 2, "ENTRY_ID"),
    (["dlq", "purge"], {}, 2, "--yes"),
    (["dlq", "retry"], {}, 2, "--all"),
    (["dlq", "show", "nope"], {}, 1, "no dead letter"),
    (["migrate", "--downgrade", "nonsense"], {}, 2, "nonsense"),
    (["no-such-command"], {}, 2, "invalid choice"),
    (["doctor", "--machines", "0"], {}, 2, "must be 1 or more"),
    (["doctor", "--machines", "1000"], {}, 1, "does not fit"),
    (["doctor"], {"DATABASE_POOLER": "pgcat"}, 2, "DATABASE_POOLER"),
    (["doctor"], {"DATABASE_DIRECT_URL": "mysql://u@localhost/x"}, 2, "DATABASE_DIRECT_URL"),
    # issue 24.3-24.4: queue pause, operators, the trail (more in test_operators.py)
    (["queue", "pause", "nope"], {}, 2, "invalid choice"),
    (["queue", "resume", "intake"], {}, 1, "not paused"),
    (["operator", "add", "two words", "--scope", "read"], {}, 2, "operator name"),
    (["operator", "revoke", "nobody"], {}, 1, "no live operator"),
    (["audit", "--since", "someday"], {}, 2, "--since"),
    # Ages and moments (domain/moments.py, one parser): an empty value is refused (an
    # unset shell variable must not widen a replay to every failed row), and so are
    # non-finite and out-of-range ones (they were an OverflowError, exit 1).
    (["replay", "--since", ""], {}, 2, "since: empty"),
    (["replay", "--since", "", "--dry-run"], {}, 2, "since: empty"),
    (["jobs", "list", "--since", ""], {}, 2, "since: empty"),
    (["jobs", "list", "--older-than", ""], {}, 2, "older-than: empty"),
    (["jobs", "list", "--after", ""], {}, 2, "not a cursor"),
    (["jobs", "list", "--since", "99999999999d"], {}, 2, "too long an age"),
    (["jobs", "list", "--older-than", "1e400d"], {}, 2, "not an age"),
    (["usage", "--since", ""], {}, 2, "--since: empty"),
    (["usage", "--until", ""], {}, 2, "--until: empty"),
    (["usage", "--since", "nan"], {}, 2, "--since: not an age"),
    (["usage", "--since", "1e400d"], {}, 2, "--since: not an age"),
    (["usage", "--since", "99999999d"], {}, 2, "too long an age"),
    (["usage", "--until", "0001-01-01T00:00+05:00"], {}, 2, "outside the years"),
    (["audit", "--since", ""], {}, 2, "--since: empty"),
    (["audit", "--since", "99999999999d"], {}, 2, "too long an age"),
    (["audit", "--operator", ""], {}, 2, "--operator: empty"),
    (["dlq", "list", "--older-than", "nan"], {}, 2, "not an age"),
    (["dlq", "list", "--newer-than", "99999999d"], {}, 2, "too long an age"),
]


def _mismatch(
    env: dict[str, str], args: list[str], override: dict[str, str], code: int, text: str
) -> str | None:
    proc = _run(args, {**env, **override})
    lines = proc.stderr.strip().splitlines()
    if (
        proc.returncode == code
        and len(lines) == 1
        and text in lines[0]
        and "Traceback" not in proc.stderr
        and "pw@" not in proc.stderr
    ):
        return None
    return f"{args} {override}: exit {proc.returncode} (want {code}), stderr {proc.stderr!r}"


def test_every_expected_failure_is_one_line_with_its_exit_code(cli_env: dict[str, str]) -> None:
    # Each case is a separate process; four at a time keep the table quick.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: _mismatch(cli_env, *case), FAILURES))
    problems = [r for r in results if r is not None]
    assert not problems, "\n".join(problems)


def test_debug_shows_the_traceback(cli_env: dict[str, str]) -> None:
    proc = _run(["--debug", "status"], {**cli_env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status", "--json"],
        ["dlq", "list", "--json"],
        ["replay", "--json"],
        ["reconcile", "--json"],
        ["doctor", "--json"],
        ["queue", "list", "--json"],
        ["operator", "list", "--json"],
        ["audit", "--json"],
    ],
)
def test_reports_have_json(cli_env: dict[str, str], args: list[str]) -> None:
    proc = _run(args, cli_env)
    assert proc.returncode == 0, proc.stderr
    json.loads(proc.stdout)


def test_empty_dead_letter_list_says_so(cli_env: dict[str, str]) -> None:
    proc = _run(["dlq", "list"], cli_env)
    assert proc.returncode == 0
    assert "no dead letters" in proc.stdout


def test_dead_letter_show_retry_and_purge(cli_env: dict[str, str]) -> None:
    redis_namespace = cli_env["REDIS_NAMESPACE"]
    client = redis.Redis.from_url(cli_env["REDIS_URL"])
    body = {
        "queue_name": "analytics",
        "actor_name": "analytics.recompute",
        "args": [{"version": 1, "period": "week", "period_start": "2026-01-05"}],
        "kwargs": {},
        "options": {"redis_message_id": "r1", "retries": 3, "traceback": "X\nValueError: boom"},
        "message_id": "m-1",
        "message_timestamp": 1,
    }
    keys = queue_keys(redis_namespace, "analytics")
    client.zadd(keys.dead, {"r1": 1_700_000_000_000})
    client.hset(keys.dead_bodies, "r1", json.dumps(body))
    listed = _run(["dlq", "list", "--queue", "analytics", "--json"], cli_env)
    (row,) = json.loads(listed.stdout)
    assert row["message_id"] == "m-1" and row["error"] == "ValueError: boom"
    assert (
        json.loads(
            _run(["dlq", "list", "--queue", "analytics", "--actor", "x", "--json"], cli_env).stdout
        )
        == []
    )
    shown = _run(["dlq", "show", "m-1", "--queue", "analytics", "--json"], cli_env)
    assert json.loads(shown.stdout)["body"]["actor_name"] == "analytics.recompute"
    retried = _run(["dlq", "retry", "m-1", "--queue", "analytics"], cli_env)
    assert "retried 1" in retried.stdout, retried.stderr
    assert client.llen(keys.ready) == 1
    moved = json.loads(client.hget(keys.ready_bodies, "r1") or b"{}")
    assert moved["options"]["retries"] == 0 and "traceback" not in moved["options"]
    purged = _run(["dlq", "purge", "--queue", "analytics", "--yes"], cli_env)
    assert "purged 0" in purged.stdout
