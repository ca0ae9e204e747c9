"""Finding jobs and acting on many (issue 24.1-24.2), against real PostgreSQL and Redis:
every filter, keyset pages without duplicates or gaps (ties on created_at included),
the SQL failure class agreeing with domain/failures.py, the dry run touching nothing, a
replay by class leaving other classes alone, resumption after an interruption between
batches, the audit rows, the CLI's contract for the new flags, and the console's jobs
page and confirmed replay (a real console process)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import redis
from sqlalchemy import Engine, text

from db.repositories.job_search import JobFilter
from domain.failures import CLASS_MARKERS, failure_class
from tests.integration.helpers import insert_entry, insert_user
from workers import bootstrap
from workers.messaging.redis_keys import queue_keys
from workers.operations import job_search
from workers.settings import get_settings

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
REASONS = {
    "server_error": "gave up after 5 retries: image: the model answered 503 UNAVAILABLE",
    "safety": "image: blocked by the model's safety filter (IMAGE_SAFETY)",
    "timeout": "image: the request timed out after 120 s",
}


@dataclass(frozen=True)
class Seeded:
    entry_id: uuid.UUID
    user_id: uuid.UUID
    status: str
    cls: str | None
    created_at: datetime
    checkpointed: bool


def _seed(engine: Engine) -> list[Seeded]:
    """24 rows for two people: every status, three failure classes, ages from now to
    ~3 days, checkpoints on some; rows 10-13 share one created_at (ties)."""
    rows: list[Seeded] = []
    statuses = ["failed", "failed", "pending", "completed", "failed", "processing"]
    classes = list(REASONS)
    with engine.begin() as conn:
        people = [insert_user(conn), insert_user(conn)]
        failed = 0
        for n in range(24):
            status = statuses[n % len(statuses)]
            cls, user = None, people[n % 2]
            if status == "failed":  # the k-th failed row: each person has every class
                cls, user = classes[failed % 3], people[(failed // 3) % 2]
                failed += 1
            created = NOW - (timedelta(hours=30) if 10 <= n <= 13 else timedelta(hours=3 * n))
            entry = insert_entry(conn, user, created_at=created)
            checkpointed = n % 4 == 0
            conn.execute(
                text(
                    "INSERT INTO visualizations (entry_id, user_id, status, error_message, "
                    "gemini_analysis, created_at) VALUES (:e, :u, :s, :m, "
                    "CAST(:g AS jsonb), :c)"
                ),
                {
                    "e": entry,
                    "u": user,
                    "s": status,
                    "m": REASONS[cls] if cls else None,
                    "g": '{"emotions": []}' if checkpointed else None,
                    "c": created,
                },
            )
            rows.append(Seeded(entry, user, status, cls, created, checkpointed))
    return rows


@pytest.fixture
def operator_process(
    db_url: str, redis_server_url: str, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """This process as an operator's CLI on the test's database and Redis namespace
    (bootstrap's parts are built on first use from the settings)."""
    for name, value in {
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": redis_namespace,
        "PROVIDER": "local",
        "EMOTIONVIZ_OPERATOR": "tester",
    }.items():
        monkeypatch.setenv(name, value)
    cached = (
        get_settings,
        bootstrap.database,
        bootstrap.broker,
        bootstrap.producer,
        bootstrap.redis_client,
    )
    for part in cached:
        part.cache_clear()
    yield
    if bootstrap.database.cache_info().currsize:
        bootstrap.database().engine.dispose()
    if bootstrap.broker.cache_info().currsize:
        bootstrap.broker().close()
    for part in cached:
        part.cache_clear()


def _published(redis_url: str, namespace: str) -> list[str]:
    """The entry ids of the entry.created messages waiting in the namespace's queue."""
    client = redis.Redis.from_url(redis_url)
    keys = queue_keys(namespace, "visualizations")
    bodies = client.hvals(keys.ready_bodies)
    client.close()
    return [json.loads(body)["args"][0]["entry_id"] for body in bodies]


def _statuses(engine: Engine) -> dict[uuid.UUID, str]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT entry_id, status FROM visualizations")).all())


def _audit(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT operator, source, action, count, detail FROM operator_actions "
                    "ORDER BY id"
                )
            ).all()
        )


# --- the class in SQL ------------------------------------------------------------------


def test_the_sql_failure_class_agrees_with_domain_failures(engine: Engine) -> None:
    reasons: list[str | None] = [None, "", "all fine", "5000x5000 pixels", "1429 bytes"]
    for _, markers in CLASS_MARKERS:
        for marker in markers:
            reasons += [marker, f"image: {marker.upper()} after 3 s", f"x{marker}9", f"9{marker}"]
    reasons += list(REASONS.values())
    with engine.connect() as conn:
        in_sql = [
            conn.execute(text("SELECT visualization_failure_class(:r)"), {"r": r}).scalar_one()
            for r in reasons
        ]
    wrong = [
        (r, s, failure_class(r))
        for r, s in zip(reasons, in_sql, strict=True)
        if s != failure_class(r)
    ]
    assert not wrong, wrong
    assert len(set(in_sql)) == len(CLASS_MARKERS) + 1  # every class (and "other") was reached


# --- find ------------------------------------------------------------------------------


def _all_pages(flt: JobFilter, limit: int) -> list[uuid.UUID]:
    seen: list[uuid.UUID] = []
    after: str | None = None
    for _ in range(100):
        page = job_search.find_jobs(flt, limit, after)
        seen += [row.entry_id for row in page.rows]
        if page.next is None:
            return seen
        after = page.next
    raise AssertionError("the pages never ended")


def _newest_first(rows: list[Seeded]) -> list[uuid.UUID]:
    return [r.entry_id for r in sorted(rows, key=lambda r: r.created_at, reverse=True)]


@pytest.mark.usefixtures("operator_process")
def test_each_filter_finds_exactly_its_rows_newest_first(engine: Engine) -> None:
    rows = _seed(engine)
    person = rows[1].user_id

    def expect(keep: Any) -> list[uuid.UUID]:
        return _newest_first([r for r in rows if keep(r)])

    def found(**typed: Any) -> list[uuid.UUID]:
        return _all_pages(job_search.build_filter(now=NOW, **typed), 5)

    cases: list[tuple[dict[str, Any], Callable[[Seeded], bool]]] = [
        ({}, lambda r: True),
        ({"user": str(person)}, lambda r: r.user_id == person),
        ({"status": "pending"}, lambda r: r.status == "pending"),
        ({"status": "completed"}, lambda r: r.status == "completed"),
        ({"classes": ["server_error"]}, lambda r: r.cls == "server_error"),
        ({"classes": ["safety", "timeout"]}, lambda r: r.cls in ("safety", "timeout")),
        ({"since": "10h"}, lambda r: r.created_at >= NOW - timedelta(hours=10)),
        ({"older_than": "1d"}, lambda r: r.created_at <= NOW - timedelta(days=1)),
        (
            {"status": "pending", "older_than": "10m"},
            lambda r: r.status == "pending" and r.created_at <= NOW - timedelta(minutes=10),
        ),
        (
            {"user": str(person), "classes": ["timeout"], "since": "2d"},
            lambda r: (
                r.user_id == person
                and r.cls == "timeout"
                and r.created_at >= NOW - timedelta(days=2)
            ),
        ),
        (
            {"since": (NOW - timedelta(hours=40)).isoformat(), "older_than": "20h"},
            lambda r: NOW - timedelta(hours=40) <= r.created_at <= NOW - timedelta(hours=20),
        ),
    ]
    for typed, keep in cases:
        wanted = expect(keep)
        got = found(**typed)
        assert wanted, typed  # each case selects something
        # Ties on created_at may come in any id order: compare as sets and the order of
        # the times.
        assert sorted(got) == sorted(wanted), typed
        assert len(got) == len(set(got)), typed
        times = {r.entry_id: r.created_at for r in rows}
        assert [times[e] for e in got] == sorted((times[e] for e in got), reverse=True), typed


@pytest.mark.usefixtures("operator_process")
def test_pages_of_every_size_have_no_duplicates_or_gaps(engine: Engine) -> None:
    rows = _seed(engine)
    everything = sorted(r.entry_id for r in rows)
    for limit in (1, 2, 3, 4, 7, 24, 50):
        walked = _all_pages(job_search.build_filter(), limit)
        assert len(walked) == len(rows), limit
        assert sorted(walked) == everything, limit
    first = job_search.find_jobs(job_search.build_filter(), 24)
    assert first.next is None  # exactly one page: no empty page after it


def test_bad_filters_are_one_error_each() -> None:
    bad: list[dict[str, Any]] = [
        {"user": "not-an-id"},
        {"status": "lost"},
        {"classes": ["weather"]},
        {"status": "pending", "classes": ["safety"]},
        {"since": "yesterday"},
        {"older_than": "5x"},
        {"since": "1h", "older_than": "2h"},
        # empty is refused, never "no filter"; non-finite and out-of-range ages and
        # moments are bad input, not an overflow (domain/moments.py)
        {"since": ""},
        {"older_than": " "},
        {"since": "99999999999d"},
        {"older_than": "nan"},
        {"since": "1e400d"},
        {"since": "0001-01-01T00:00+05:00"},
    ]
    for typed in bad:
        with pytest.raises(job_search.FilterError):
            job_search.build_filter(**typed)
    for cursor in ("junk", "", "9" * 5000 + ".00"):
        with pytest.raises(job_search.FilterError):
            job_search.decode_cursor(cursor)


# --- act on many -----------------------------------------------------------------------


@pytest.mark.usefixtures("operator_process")
def test_a_replay_by_class_replays_that_class_alone_in_audited_batches(
    engine: Engine, redis_server_url: str, redis_namespace: str
) -> None:
    rows = _seed(engine)
    wanted = {r.entry_id for r in rows if r.cls == "server_error"}
    plan = job_search.plan_replay(job_search.build_filter(classes=["server_error"]))
    assert plan.rows == len(wanted)
    checkpointed = sum(r.checkpointed for r in rows if r.cls == "server_error")
    assert plan.paid_calls == checkpointed + 2 * (len(wanted) - checkpointed)

    result = job_search.replay_matching(job_search.build_filter(classes=["server_error"]), batch=2)

    assert result.rows == len(wanted) and result.by_class == {"server_error": len(wanted)}
    assert result.paid_calls == plan.paid_calls
    after = _statuses(engine)
    assert {e for e, s in after.items() if s == "pending"} == wanted | {
        r.entry_id for r in rows if r.status == "pending"
    }
    assert {e for e, s in after.items() if s == "failed"} == {
        r.entry_id for r in rows if r.cls in ("safety", "timeout")
    }
    assert sorted(_published(redis_server_url, redis_namespace)) == sorted(map(str, wanted))
    with engine.connect() as conn:  # replays wait in the fair pool's low lane
        lanes = conn.execute(
            text("SELECT entry_id, lane FROM fair_waiting WHERE entry_id = ANY(:e)"),
            {"e": list(wanted)},
        ).all()
    assert {e for e, _ in lanes} == wanted and {lane for _, lane in lanes} == {1}
    audit = _audit(engine)
    assert len(audit) == result.batches == -(-len(wanted) // 2)
    assert {(a.operator, a.source, a.action) for a in audit} == {("tester", "cli", "replay")}
    assert sum(a.count for a in audit) == len(wanted)
    assert all(a.detail["filters"]["classes"] == ["server_error"] for a in audit)


@pytest.mark.usefixtures("operator_process")
def test_an_interrupted_replay_resumes_where_it_stopped_paying_nothing_twice(
    engine: Engine, redis_server_url: str, redis_namespace: str
) -> None:
    rows = _seed(engine)
    failed = {r.entry_id for r in rows if r.status == "failed"}
    flt = job_search.build_filter()
    batches: list[int] = []

    first = job_search.replay_matching(
        flt, batch=3, on_batch=lambda n, _c: batches.append(n), stop=lambda: len(batches) >= 2
    )

    assert first.rows == 6 and first.batches == 2
    assert sum(1 for e in failed if _statuses(engine)[e] == "failed") == len(failed) - 6
    assert job_search.plan_replay(flt).rows == len(failed) - 6  # what a rerun would do

    second = job_search.replay_matching(flt, batch=3)

    assert first.rows + second.rows == len(failed)
    assert all(_statuses(engine)[e] == "pending" for e in failed)
    published = _published(redis_server_url, redis_namespace)
    assert sorted(published) == sorted(map(str, failed))  # each entry once
    assert job_search.replay_matching(flt, batch=3).rows == 0  # nothing left


# --- the CLI ---------------------------------------------------------------------------


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**os.environ, **env, "PYTHONPATH": str(Path.cwd()), "LOG_FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def cli_env(db_url: str, redis_server_url: str, redis_namespace: str) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url,
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": redis_namespace,
        "PROVIDER": "local",
    }


@pytest.mark.slow
def test_cli_dry_run_counts_and_touches_nothing_then_the_replay_and_list(
    engine: Engine, cli_env: dict[str, str]
) -> None:
    rows = _seed(engine)
    before = _statuses(engine)
    timeouts = [r for r in rows if r.cls == "timeout"]

    dry = _cli(["replay", "--class", "timeout", "--dry-run", "--json"], cli_env)

    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["rows"] == len(timeouts) and report["dry_run"] is True
    assert report["by_class"]["timeout"]["rows"] == len(timeouts)
    assert report["paid_calls"] == sum(1 if r.checkpointed else 2 for r in timeouts)
    assert _statuses(engine) == before and _audit(engine) == []
    assert _published(cli_env["REDIS_URL"], cli_env["REDIS_NAMESPACE"]) == []

    done = _cli(["replay", "--class", "timeout", "--batch", "2", "--json"], cli_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["replayed"] == len(timeouts)

    listed = _cli(["jobs", "list", "--status", "failed", "--limit", "2", "--json"], cli_env)
    assert listed.returncode == 0, listed.stderr
    page = json.loads(listed.stdout)
    assert len(page["jobs"]) == 2 and page["next"]
    assert {job["failure_class"] for job in page["jobs"]} <= {"server_error", "safety"}
    following = _cli(["jobs", "list", "--status", "failed", "--after", page["next"]], cli_env)
    assert following.returncode == 0 and "next page" not in following.stdout
    failed_left = sum(1 for r in rows if r.cls in ("server_error", "safety"))
    assert len(following.stdout.strip().splitlines()) == 1 + failed_left - 2  # header + rows


BAD = [
    (["jobs", "list", "--since", "yesterday"], "since"),
    (["jobs", "list", "--after", "junk"], "cursor"),
    (["jobs", "list", "--status", "pending", "--class", "safety"], "only failed jobs"),
    (["jobs", "list", "--class", "weather"], "invalid choice"),
    (["replay", str(uuid.UUID(int=1)), "--class", "safety"], "not both"),
]


@pytest.mark.slow
def test_cli_bad_filters_are_one_line_exit_2(cli_env: dict[str, str]) -> None:
    def mismatch(case: tuple[list[str], str]) -> str | None:
        args, words = case
        proc = _cli(args, cli_env)
        lines = proc.stderr.strip().splitlines()
        if proc.returncode == 2 and len(lines) == 1 and words in lines[0]:
            return None
        return f"{args}: exit {proc.returncode}, stderr {proc.stderr!r}"

    # Each case is a process; four at a time keep the table quick.
    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(mismatch, BAD) if p is not None]
    assert not problems, "\n".join(problems)


def test_the_parser_mirrors_agree_with_the_operations() -> None:
    from workers.entrypoints import commands
    from workers.operations.job_search import (
        DEFAULT_BATCH,
        DEFAULT_LIMIT,
        FAILURE_CLASSES,
        STATUSES,
    )

    assert commands.FAILURE_CLASSES == FAILURE_CLASSES
    assert commands.VISUALIZATION_STATUSES == STATUSES
    assert commands.JOBS_PAGE == DEFAULT_LIMIT
    assert commands.REPLAY_BATCH == DEFAULT_BATCH


# --- the console -----------------------------------------------------------------------

TOKEN = "jobs-test-" + uuid.uuid4().hex


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


@pytest.fixture
def console(cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``emotionviz console`` on a free port, on the test's database and Redis."""
    log_path = tmp_path / "console.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.entrypoints.cli", "console", "--port", "0"],
            env={**os.environ, **cli_env, "CONSOLE_TOKEN": TOKEN, "PYTHONPATH": str(Path.cwd())},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    url = None
    while url is None:
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
        url = next((line.split()[-1] for line in lines if "listening on" in line), None)
        time.sleep(0.05)
    try:
        yield url.rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        assert proc.stdout is not None
        proc.stdout.close()


class Client:
    """Raw HTTP to the console, as a browser signed in with the form would send it: the
    session cookie, the page's CSRF token, the Origin header (no redirects followed)."""

    def __init__(self, base: str) -> None:
        self.base, self.cookie = base, ""

    def request(
        self, method: str, path: str, form: dict[str, Any] | None = None, origin: bool = True
    ) -> Reply:
        parts = urlsplit(self.base)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
        headers = {"Accept": "text/html", "Cookie": self.cookie}
        body = urlencode(form, doseq=True) if form is not None else None
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            if origin:
                headers["Origin"] = self.base
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            reply = Reply(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read().decode(),
            )
        finally:
            conn.close()
        if "set-cookie" in reply.headers:
            self.cookie = reply.headers["set-cookie"].split(";")[0]
        return reply

    def csrf(self, page: Reply) -> str:
        marker = 'name="csrf" value="'
        start = page.body.index(marker) + len(marker)
        return page.body[start : page.body.index('"', start)]

    def sign_in(self) -> None:
        login = self.request("GET", "/login")
        signed = self.request(
            "POST", "/login", {"csrf": self.csrf(login), "token": TOKEN, "next": "/"}
        )
        assert signed.status == 303, signed.body


@pytest.mark.slow
def test_console_jobs_page_and_a_replay_confirmed_with_its_count(
    engine: Engine, console: str
) -> None:
    rows = _seed(engine)
    safety = [r for r in rows if r.cls == "safety"]
    person = rows[0].user_id
    browser = Client(console)
    browser.sign_in()

    listed = browser.request("GET", f"/jobs?class=safety&user={person}&limit=2")
    assert listed.status == 200
    mine = [r for r in safety if r.user_id == person]
    assert listed.body.count("<tr>") - 1 == min(2, len(mine))  # header row, then jobs
    assert ('id="next-page"' in listed.body) == (len(mine) > 2)
    bad = browser.request("GET", "/jobs?since=yesterday")
    assert bad.status == 400 and "since: not an age" in bad.body
    # Out of range is bad input too (it was an OverflowError, a 500), and so is a limit.
    far = browser.request("GET", "/jobs?since=99999999999d")
    assert far.status == 400 and "is too long an age" in far.body
    assert browser.request("GET", "/jobs?older_than=0001-01-01").status == 400
    huge = browser.request("GET", "/jobs?limit=" + "9" * 5000)
    assert huge.status == 400 and "limit: a whole number" in huge.body

    confirm = browser.request("GET", "/jobs/replay?class=safety")
    cost = sum(1 if r.checkpointed else 2 for r in safety)
    assert confirm.status == 200
    assert f"<strong>{len(safety)}</strong> failed visualizations" in confirm.body
    assert f"<strong>{cost}</strong> paid model calls" in confirm.body
    csrf = browser.csrf(confirm)

    form = {"class": "safety", "csrf": csrf}
    stale = browser.request("POST", "/jobs/replay", {**form, "confirmed_rows": len(safety) - 1})
    assert stale.status == 409 and "confirm again" in stale.body
    right = {**form, "confirmed_rows": len(safety)}
    assert browser.request("POST", "/jobs/replay", right, origin=False).status == 403
    assert browser.request("POST", "/jobs/replay", {**right, "csrf": "stale"}).status == 403
    assert _audit(engine) == [] and all(_statuses(engine)[r.entry_id] == "failed" for r in safety)

    done = browser.request("POST", "/jobs/replay", right)
    assert done.status == 303 and done.headers["location"].startswith("/jobs?")
    after = _statuses(engine)
    assert all(after[r.entry_id] == "pending" for r in safety)
    assert all(after[r.entry_id] == "failed" for r in rows if r.cls in ("server_error", "timeout"))
    (audit,) = _audit(engine)
    assert (audit.source, audit.action, audit.count) == ("console", "replay", len(safety))
    # The shared token's name in the trail: "console" here ("shared-token" once named
    # operator tokens, issue 24.4, tell the console who signed in).
    assert audit.operator in ("console", "shared-token")


@pytest.mark.usefixtures("operator_process")
def test_the_cli_replay_of_listed_ids_is_recorded_in_its_transaction(engine: Engine) -> None:
    from workers.operations.jobs import replay_failed

    rows = _seed(engine)
    chosen = [r.entry_id for r in rows if r.status == "failed"][:3]
    chosen.append(next(r.entry_id for r in rows if r.status == "completed"))  # not failed

    assert sorted(replay_failed(chosen, source="cli")) == sorted(chosen[:3])
    assert replay_failed(chosen[3:], source="cli") == []  # nothing replayed: no record
    replay_failed(None)  # every failed row; the caller records it (the console does)

    (audit,) = _audit(engine)
    assert (audit.operator, audit.source, audit.action, audit.count) == (
        "tester",
        "cli",
        "replay",
        3,
    )


def test_a_first_ctrl_c_stops_the_replay_between_batches_a_second_at_once() -> None:
    import signal

    from workers.entrypoints.commands.jobs import _stopped_by_signals

    stop = threading.Event()
    with _stopped_by_signals(stop):
        os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread's handler
        assert stop.is_set()  # the batch in flight finishes; the loop checks stop()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
