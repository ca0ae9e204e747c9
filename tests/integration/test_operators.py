"""Named operators and the trail (issue 24.4), queue pause commands (issue 24.3): the
CLI as real processes against the test's PostgreSQL and Redis, and the console as its
own server process (Bearer and form sign-in)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import redis
from sqlalchemy import create_engine, text

from db.engine import normalise_url
from tests.conftest import RUN_ID, DatabaseFactory
from tests.integration.helpers import insert_entry, insert_user, insert_visualization

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHARED = "shared-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def env(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    name, url = database_factory.create()
    namespace = f"evt:{RUN_ID}:ops-{uuid.uuid4().hex[:6]}"
    yield {
        "DATABASE_URL": url,
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": namespace,
        "PROVIDER": "local",
        "PYTHONPATH": str(Path.cwd()),
        "LOG_FORMAT": "json",
        "MEDIA_DIR": str(tmp_path_factory.mktemp("media")),
        "EMOTIONVIZ_OPERATOR": "alice",
        "CONSOLE_TOKEN": SHARED,
    }
    database_factory.drop(name)
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)


def _run(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**os.environ, **env, **extra},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _many(env: dict[str, str], *commands: list[str]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands, four processes at a time."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda args: _run(env, *args), commands))


def _one_line(proc: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code and len(lines) == 1 and words in lines[0], proc
    assert "Traceback" not in proc.stderr


def _sql(env: dict[str, str], statement: str, **params: Any) -> list[Any]:
    engine = create_engine(normalise_url(env["DATABASE_URL"]))
    try:
        with engine.begin() as conn:
            return list(conn.execute(text(statement), params))
    finally:
        engine.dispose()


def _trail(env: dict[str, str], *args: str) -> list[dict[str, Any]]:
    proc = _run(env, "audit", "--json", "--limit", "1000", *args)
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, Any]] = json.loads(proc.stdout)
    return rows


def _add(env: dict[str, str], name: str, scope: str) -> str:
    proc = _run(env, "operator", "add", name, "--scope", scope, "--json")
    assert proc.returncode == 0, proc.stderr
    made = json.loads(proc.stdout)
    assert made["name"] == name and made["scope"] == scope
    token: str = made["token"]
    return token


# --- the CLI ---------------------------------------------------------------------------


def test_operator_tokens_are_stored_hashed_listed_without_them_and_revoked(
    env: dict[str, str],
) -> None:
    token = _add(env, "bob", "read")
    (stored,) = _sql(env, "SELECT token_sha256, created_by FROM operators WHERE name = 'bob'")
    assert stored.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    assert stored.created_by == "alice"
    assert not _sql(env, "SELECT 1 FROM operators WHERE token_sha256 LIKE :t", t=f"%{token[4:20]}%")
    listed, again, bad_name, bad_scope, since = _many(
        env,
        ["operator", "list", "--json"],
        ["operator", "add", "bob", "--scope", "write"],
        ["operator", "add", "no spaces", "--scope", "read"],
        ["operator", "add", "carol", "--scope", "admin"],
        ["audit", "--since", "yesterday-ish"],
    )
    assert token not in listed.stdout
    assert [row["name"] for row in json.loads(listed.stdout)] == ["bob"]
    _one_line(again, 1, "already exists")
    _one_line(bad_name, 2, "operator name")
    _one_line(bad_scope, 2, "invalid choice")
    _one_line(since, 2, "--since")
    assert _run(env, "operator", "revoke", "bob").returncode == 0
    again, live, every = _many(
        env,
        ["operator", "revoke", "bob"],
        ["operator", "list", "--json"],
        ["operator", "list", "--all", "--json"],
    )
    _one_line(again, 1, "no live operator")
    assert json.loads(live.stdout) == []
    assert json.loads(every.stdout)[0]["revoked_at"]
    actions = {
        (r["action"], r["target"], r["operator"]) for r in _trail(env, "--operator", "alice")
    }
    assert {("operator.add", "bob", "alice"), ("operator.revoke", "bob", "alice")} <= actions


def test_queue_commands_keep_the_contract_and_are_in_the_trail(env: dict[str, str]) -> None:
    paused = _run(env, "queue", "pause", "analytics", "--reason", "migration", "--json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["paused_by"] == "alice"
    namespace = env["REDIS_NAMESPACE"]
    mirror = redis.Redis.from_url(env["REDIS_URL"]).hgetall(f"{namespace}:__paused__")
    assert b"analytics" in mirror
    twice, unknown, listed, status = _many(
        env,
        ["queue", "pause", "analytics"],
        ["queue", "pause", "nope"],
        ["queue", "list", "--json"],
        ["status", "--json"],
    )
    metrics = subprocess.run(
        [
            sys.executable,
            "-c",
            "from workers.observability.exposition import render_metrics; "
            "print(render_metrics().decode())",
        ],
        env={**os.environ, **env, "QUEUE_PAUSE_ALERT_S": "0.001"},
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert 'emotionviz_queue_paused{queue="analytics"} 1.0' in metrics
    assert 'emotionviz_queue_paused{queue="intake"} 0.0' in metrics
    assert 'emotionviz_queue_paused_too_long{queue="analytics"} 1.0' in metrics
    assert 'emotionviz_queue_paused_seconds{queue="analytics"} 0.0' not in metrics
    _one_line(twice, 1, "paused already")
    _one_line(unknown, 2, "invalid choice")
    (row,) = json.loads(listed.stdout)
    assert (row["queue"], row["paused_by"], row["reason"]) == ("analytics", "alice", "migration")
    assert [p["queue"] for p in json.loads(status.stdout)["paused_queues"]] == ["analytics"]
    assert _run(env, "queue", "resume", "analytics").returncode == 0
    again, listed = _many(env, ["queue", "resume", "analytics"], ["queue", "list", "--json"])
    _one_line(again, 1, "not paused")
    assert json.loads(listed.stdout) == []
    assert b"analytics" not in redis.Redis.from_url(env["REDIS_URL"]).hgetall(
        f"{namespace}:__paused__"
    )
    done = {(r["action"], r["target"]) for r in _trail(env, "--action", "queue.pause")}
    assert done == {("queue.pause", "analytics")}


def test_every_cli_change_is_in_the_trail_with_its_operators_name(env: dict[str, str]) -> None:
    engine = create_engine(normalise_url(env["DATABASE_URL"]))
    with engine.begin() as conn:
        user = insert_user(conn)
        entry = insert_entry(conn, user)
    engine.dispose()
    changes = [
        ["enqueue", "entry", str(entry)],
        ["reconcile"],
        ["dlq", "retry", "--all", "--queue", "analytics"],
        ["dlq", "replay", "--queue", "analytics"],
        ["dlq", "purge", "--yes", "--queue", "analytics"],
        ["events", "replay"],
        ["media", "gc", "--apply"],
        ["analytics", "recompute", "--period", "week", "--from", "2026-01-05"],
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(lambda args: _run(env, *args, EMOTIONVIZ_OPERATOR="dana"), changes))
    for args, proc in zip(changes, runs, strict=True):
        assert proc.returncode == 0, (args, proc.stderr)
    actions = {r["action"]: r for r in _trail(env, "--operator", "dana")}
    assert set(actions) == {
        "enqueue",
        "reconcile",
        "dlq.retry",
        "dlq.replay",
        "dlq.purge",
        "events.replay",
        "media.gc",
        "analytics.recompute",
    }
    assert actions["enqueue"]["target"] == f"entry:{entry}"
    assert all(r["source"] == "cli" and r["operator"] == "dana" for r in actions.values())
    # A dry run changes nothing and is not recorded.
    assert _run(env, "media", "gc", EMOTIONVIZ_OPERATOR="erin").returncode == 0
    assert _trail(env, "--operator", "erin") == []


# --- the console -----------------------------------------------------------------------


class Console:
    def __init__(self, url: str, proc: subprocess.Popen[str]) -> None:
        self.url, self.proc = url, proc

    def request(
        self,
        method: str,
        path: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], str]:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=15)
        body = urlencode(form) if form is not None else None
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            got = {k.lower(): v for k, v in response.getheaders()}
            return response.status, got, response.read().decode(errors="replace")
        finally:
            conn.close()


@pytest.fixture(scope="module")
def console(env: dict[str, str]) -> Iterator[Console]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "workers.entrypoints.cli", "console", "--port", "0"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 30
    url = None
    while url is None:
        assert time.monotonic() < deadline and proc.poll() is None, "the console did not start"
        url = next((line.split()[-1] for line in lines if "listening on" in line), None)
        time.sleep(0.05)
    served = Console(url.rstrip("/"), proc)
    while served.request("GET", "/healthz")[0] != 200:
        assert time.monotonic() < deadline, "the console does not answer"
        time.sleep(0.05)
    yield served
    proc.terminate()
    proc.wait(timeout=15)
    reader.join(timeout=5)
    if proc.stdout is not None:
        proc.stdout.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def test_a_read_token_sees_but_may_not_act_and_a_write_token_acts_in_its_name(
    env: dict[str, str], console: Console
) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        reader, writer = pool.map(
            lambda made: _add(env, *made), [("rita", "read"), ("walt", "write")]
        )
    status, _, page = console.request("GET", "/queues", headers=_bearer(reader))
    assert status == 200 and "visualizations" in page
    status, _, body = console.request(
        "POST", "/queues/intake/pause", form={}, headers=_bearer(reader)
    )
    assert status == 403
    assert json.loads(body)["error"] == (
        "refused: rita's token has read scope; this needs a write token"
    )
    assert _sql(env, "SELECT name FROM paused_queues") == []
    status, _, _ = console.request(
        "POST", "/queues/intake/pause", form={"reason": "drill"}, headers=_bearer(writer)
    )
    assert status == 303
    status, _, live = console.request("GET", "/overview/live", headers=_bearer(reader))
    assert status == 200 and 'id="q-intake-paused"' in live and "paused by walt" in live
    status, _, _ = console.request(
        "POST", "/queues/intake/resume", form={}, headers=_bearer(writer)
    )
    assert status == 303
    status, _, _ = console.request(
        "POST", "/dead-letters/analytics/purge", form={"confirm": "yes"}, headers=_bearer(writer)
    )
    assert status == 303
    walt = {(r["action"], r["target"], r["source"]) for r in _trail(env, "--operator", "walt")}
    assert walt == {
        ("queue.pause", "intake", "console"),
        ("queue.resume", "intake", "console"),
        ("dlq.purge", "analytics", "console"),
    }
    assert _trail(env, "--operator", "rita") == []


def test_console_reads_of_a_persons_text_are_recorded_and_revoked_tokens_refused(
    env: dict[str, str], console: Console
) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        token, fresh = pool.map(
            lambda made: _add(env, *made), [("rhea", "read"), ("gone", "write")]
        )
    engine = create_engine(normalise_url(env["DATABASE_URL"]))
    with engine.begin() as conn:
        entry = insert_entry(conn, insert_user(conn), situation="a private situation")
    engine.dispose()
    status, _, page = console.request(
        "GET", f"/jobs/entry/{entry}", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200 and "a private situation" in page
    (row,) = _trail(env, "--operator", "rhea", "--action", "read_entry")
    assert (row["target"], row["source"]) == (f"entry:{entry}", "console")
    assert _run(env, "operator", "revoke", "gone").returncode == 0
    assert console.request("GET", "/queues", headers=_bearer(fresh))[0] == 401
    assert console.request("GET", "/queues", headers=_bearer("evo_" + "x" * 43))[0] == 401


def test_the_form_signs_an_operator_in_by_name_and_the_shared_token_still_works(
    env: dict[str, str], console: Console
) -> None:
    token = _add(env, "fay", "write")
    for secret, name in ((token, "fay"), (SHARED, "shared-token")):
        status, headers, page = console.request("GET", "/login", headers={"Accept": "text/html"})
        cookie = headers["set-cookie"].split(";")[0]
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        origin = console.url
        status, headers, _ = console.request(
            "POST",
            "/login",
            form={"csrf": csrf, "token": secret, "next": "/queues"},
            headers={"Cookie": cookie, "Origin": origin, "Accept": "text/html"},
        )
        assert status == 303, name
        signed = headers["set-cookie"].split(";")[0]
        status, _, page = console.request(
            "GET", "/queues", headers={"Cookie": signed, "Accept": "text/html"}
        )
        assert status == 200 and f'<span class="operator muted">{name}</span>' in page


def test_the_failures_page_is_a_recorded_read_and_its_replay_is_in_the_trail(
    env: dict[str, str], console: Console
) -> None:
    token = _add(env, "fern", "write")
    engine = create_engine(normalise_url(env["DATABASE_URL"]))
    with engine.begin() as conn:
        user = insert_user(conn)
        entry = insert_entry(conn, user, situation="a situation shown as an excerpt")
        insert_visualization(conn, entry, user)
        conn.execute(
            text(
                "UPDATE visualizations SET status = 'failed', error_message = 'drill' "
                "WHERE entry_id = :e"
            ),
            {"e": entry},
        )
    engine.dispose()
    status, _, page = console.request(
        "GET", "/failures", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200 and "a situation shown as an excerpt" in page
    (read,) = _trail(env, "--operator", "fern", "--action", "read_entry")
    assert (read["target"], read["source"], read["count"]) == ("failures page", "console", 1)
    assert str(entry) in json.dumps(read)  # the ids it showed

    status, _, _ = console.request(
        "POST", "/failures/replay", form={"one": str(entry)}, headers=_bearer(token)
    )
    assert status == 303
    (replay,) = _trail(env, "--operator", "fern", "--action", "replay")
    assert (replay["target"], replay["source"], replay["count"]) == (
        "failed visualizations",
        "console",
        1,
    )
    assert _sql(env, "SELECT status FROM visualizations WHERE entry_id = :e", e=entry) == [
        ("pending",)
    ]
