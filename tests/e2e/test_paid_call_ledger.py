"""The paid-call ledger and the daily budget (issue 23.3) with a real worker process,
real PostgreSQL and Redis, and the google-genai SDK talking HTTP to the emulator with
injected faults: ``emotionviz usage --json`` counts exactly the calls the emulator ran
(accepted, not answered 429), retries and repair attempts included; a person over a
tiny budget has their next entry wait, with the reason on the row and in ``status``,
until the next 00:00 UTC."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text

from db.engine import make_session_factory
from db.uow import UnitOfWork
from domain.ledger import MIDNIGHT_JITTER_S, next_utc_midnight
from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.messaging.redis_keys import queue_keys
from workers.producer_api import ProducerAPI
from workers.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ANALYSIS_MODEL, IMAGE_MODEL = "gemini-3.5-flash", "gemini-3.1-flash-image"


def _cli(harness: Harness, *args: str, env: dict[str, str] | None = None) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", *args],
        env={**harness.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _paid(harness: Harness) -> dict[str, int]:
    """Per kind, the calls the emulator ran (its stats: ``paid``)."""
    with urllib.request.urlopen(f"{harness.emulator.url}/_emulator/stats") as response:
        kinds = json.loads(response.read())["kinds"]
    return {kind: int(summary["paid"]) for kind, summary in kinds.items()}


@pytest.fixture(scope="module")
def ledger_harness(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    with running_harness(
        database_factory, redis_server_url, tmp_path_factory.mktemp("ledger"), threads=4
    ) as h:
        yield h


def test_usage_totals_equal_the_calls_the_emulator_ran_under_faults(
    ledger_harness: Harness,
) -> None:
    h = ledger_harness
    marker = f"ledger-{uuid.uuid4().hex[:8]}"
    # Each fault makes one more attempt: a 503 (retried), a timeout past the client's
    # REQUEST_TIMEOUT_S of 2 s (retried), malformed JSON (one repair attempt), and a
    # 429 on an image (retried; the 429 itself was not run, so it is not paid).
    h.fault(kind="503", target="analysis", contains=marker, times=1)
    h.fault(kind="timeout", target="analysis", contains=marker, times=1, seconds=3)
    h.fault(kind="malformed_json", target="analysis", contains=marker, times=1)
    h.fault(kind="429", target="image", contains=marker, times=1, seconds=0.2)
    # And a request the API refuses (400): failed for good, not run, not paid.
    h.fault(kind="400", target="analysis", contains=f"{marker}-refused", times=1)
    refused = h.make_entry(f"{marker}-refused")
    entries = [h.make_entry(f"{marker}-{i}") for i in range(4)]
    for entry_id, user_id in [*entries, refused]:
        h.publish(entry_id, user_id)
    for entry_id, _ in entries:
        assert h.wait_for(entry_id, timeout=60)["status"] == "completed"
    assert h.wait_for(refused[0], timeout=60)["status"] == "failed"

    paid = _paid(h)
    # 4 analyses + 3 faulted attempts, 4 images (the 429 and the 400 not counted)
    assert paid == {"analysis": 7, "image": 4}
    by_model = _cli(h, "usage", "--by", "model", "--json")
    rows = {row["key"]: row for row in by_model["rows"]}
    assert rows[ANALYSIS_MODEL]["calls"] == paid["analysis"]
    assert rows[IMAGE_MODEL]["calls"] == paid["image"]
    assert by_model["totals"]["calls"] == sum(paid.values())
    assert rows[ANALYSIS_MODEL]["failed"] == 3  # server_error, timeout, invalid_output
    assert rows[IMAGE_MODEL]["images"] == 4 and rows[IMAGE_MODEL]["failed"] == 0
    # Tokens from the answers' usage metadata; the image priced per image.
    assert rows[ANALYSIS_MODEL]["input_tokens"] > 0 and rows[ANALYSIS_MODEL]["output_tokens"] > 0
    assert Decimal(rows[IMAGE_MODEL]["cost_usd"]) >= Decimal("0.039") * 4

    by_user = _cli(h, "usage", "--by", "user", "--since", "1h", "--json")
    assert {row["key"] for row in by_user["rows"]} == {str(user) for _, user in entries}
    assert by_user["totals"] == by_model["totals"]
    with h.engine.connect() as conn:
        outcomes: dict[str, int] = {
            str(outcome): int(n)
            for outcome, n in conn.execute(
                text("SELECT outcome, count(*) FROM model_calls GROUP BY 1")
            ).all()
        }
        unowned = conn.execute(
            text("SELECT count(*) FROM model_calls WHERE user_id IS NULL OR entry_id IS NULL")
        ).scalar_one()
    assert outcomes == {"ok": 8, "server_error": 1, "timeout": 1, "invalid_output": 1}
    assert unowned == 0  # every row names its person and entry


def test_an_intake_turn_is_recorded_as_the_persons_with_its_session(
    ledger_harness: Harness,
) -> None:
    h = ledger_harness
    settings = Settings(_env_file=None, redis_namespace=h.namespace)  # type: ignore[call-arg]
    broker = build_broker(settings, h.redis_url)
    factory = make_session_factory(h.engine)
    try:
        producer = ProducerAPI(lambda: UnitOfWork(factory, Producer(broker)))
        with h.engine.begin() as conn:
            user_id = conn.execute(
                text(
                    "INSERT INTO users (email, hashed_password, name) "
                    "VALUES (:e, 'x', 'I') RETURNING id"
                ),
                {"e": f"intake-{uuid.uuid4().hex[:8]}@example.com"},
            ).scalar_one()
        session_id = producer.start_intake(user_id, "Situation: my flight was cancelled")
    finally:
        broker.close()
    deadline = time.monotonic() + 30
    rows: list[Any] = []
    while not rows:
        assert time.monotonic() < deadline, "no intake call recorded"
        with h.engine.connect() as conn:
            rows = list(
                conn.execute(
                    text(
                        "SELECT kind, user_id, entry_id, outcome, input_tokens FROM model_calls "
                        "WHERE intake_session_id = :s"
                    ),
                    {"s": session_id},
                ).all()
            )
        time.sleep(0.1)
    assert [tuple(r)[:4] for r in rows] == [("intake", user_id, None, "ok")]
    assert rows[0][4] > 0


def test_over_the_daily_budget_the_next_entry_waits_until_midnight(
    ledger_harness: Harness,
) -> None:
    # One entry costs ~$0.04 (an analysis and a 1K image at the default prices): a
    # budget of $0.03 lets a person's first one finish and stops their second.
    h = ledger_harness
    h.stop_workers()
    budget = {"USER_DAILY_BUDGET_USD": "0.03", "BUDGET_CACHE_S": "0"}
    h.start_worker(threads=2, extra_env=budget)
    marker = f"budget-{uuid.uuid4().hex[:8]}"
    first, user_id = h.make_entry(f"{marker}-1")
    h.publish(first, user_id)
    assert h.wait_for(first, timeout=30)["status"] == "completed"
    with h.engine.begin() as conn:
        second = conn.execute(
            text(
                "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
                "VALUES (:u, :s, ARRAY['joy'], 0.5) RETURNING id"
            ),
            {"u": user_id, "s": f"Situation {marker}-2: the same person again"},
        ).scalar_one()
    calls_before = sum(_paid(h).values())
    h.publish(second, user_id)
    row = h.wait_for(second, statuses=("pending",), timeout=30)
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while "daily budget" not in (row["error_message"] or ""):
        assert datetime.now(UTC) < deadline, row
        row = h.wait_for(second, statuses=("pending",), timeout=30)

    assert row["error_message"].startswith("will retry: daily budget of $0.03 reached")
    assert "resumes at 00:00 UTC" in row["error_message"]
    midnight = next_utc_midnight(datetime.now(UTC))
    # The reconciler leaves the row alone until then (its retry is due then).
    assert midnight <= row["dispatched_at"] <= midnight + timedelta(seconds=MIDNIGHT_JITTER_S + 5)
    assert sum(_paid(h).values()) == calls_before  # no call was made for it
    status = _cli(h, "status", "--json", env=budget)["paid_calls_today"]
    assert status["waiting_on_budget"] == 1
    assert status["user_daily_budget_usd"] == "0.03"
    assert Decimal(status["cost_usd"]) >= Decimal("0.03")
    assert "deferred: daily budget reached" in h.log_path.read_text(errors="replace")
    # Its retry waits in the delay queue for midnight, without spending a retry;
    # nothing was dead-lettered.
    keys = queue_keys(h.namespace, "visualizations")
    delayed = [json.loads(b) for b in h.redis.hvals(keys.delayed_bodies)]
    (retry,) = [m for m in delayed if m["args"][0]["entry_id"] == str(second)]
    assert retry["options"]["retries"] == 0
    eta = datetime.fromtimestamp(retry["options"]["eta"] / 1000, UTC)
    assert midnight <= eta <= midnight + timedelta(seconds=MIDNIGHT_JITTER_S + 5)
    dead = [json.loads(b) for b in h.redis.hvals(keys.dead_bodies)]
    assert not [m for m in dead if m["args"][0]["entry_id"] == str(second)]
