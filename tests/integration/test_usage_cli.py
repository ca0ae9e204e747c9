"""``emotionviz usage`` as a real process against the test's PostgreSQL (issue 23.3):
the ledger's rows grouped by person, day and model between two times, with totals; bad
input and configuration exit 2 with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

pytestmark = pytest.mark.integration


def _run(args: list[str], db_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.entrypoints.cli", "usage", *args],
        env={
            **os.environ,
            "DATABASE_URL": db_url,
            "PROVIDER": "local",
            "PYTHONPATH": str(Path.cwd()),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_usage_groups_the_ledger_between_two_times(db_url: str, engine: Engine) -> None:
    ann, bob = uuid.uuid4(), uuid.uuid4()
    calls = [  # (person, model, hours ago, cost, outcome)
        (ann, "text-model", 1, "0.001000", "ok"),
        (ann, "image-model", 1, "0.039000", "ok"),
        (bob, "text-model", 2, "0", "server_error"),
        (bob, "text-model", 30, "0.002000", "ok"),  # before --since 1d
    ]
    with engine.begin() as conn:
        for person, model, hours, cost, outcome in calls:
            conn.execute(
                text(
                    "INSERT INTO model_calls (at, user_id, model, kind, input_tokens, "
                    "output_tokens, image, outcome, cost_usd) VALUES (now() - make_interval("
                    "hours => :h), :u, :m, 'analysis', 100, 10, :img, :o, CAST(:c AS numeric))"
                ),
                {
                    "h": hours,
                    "u": person,
                    "m": model,
                    "img": model == "image-model",
                    "o": outcome,
                    "c": cost,
                },
            )
    done = _run(["--by", "user", "--since", "1d", "--json"], db_url)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = {row["key"]: row for row in report["rows"]}
    assert rows[str(ann)]["calls"] == 2 and rows[str(ann)]["cost_usd"] == "0.040000"
    assert rows[str(bob)]["calls"] == 1 and rows[str(bob)]["failed"] == 1
    assert report["totals"] | {"key": ""} == {
        "key": "",
        "calls": 3,
        "input_tokens": 300,
        "output_tokens": 30,
        "images": 1,
        "failed": 1,
        "cost_usd": "0.040000",
    }
    # Only the older call: --until excludes the last day.
    done = _run(["--by", "model", "--since", "2d", "--until", "1d", "--json"], db_url)
    (row,) = json.loads(done.stdout)["rows"]
    assert (row["key"], row["calls"], row["cost_usd"]) == ("text-model", 1, "0.002000")
    table = _run(["--by", "day"], db_url)
    assert table.returncode == 0 and "total" in table.stdout


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--since", "last tuesday"], {}, "--since: not an age"),
        (["--since", "1d", "--until", "2d"], {}, "is not before --until"),
        ([], {"PRICE_TABLE": "not json"}, "PRICE_TABLE"),
        ([], {"USER_DAILY_BUDGET_USD": "-1"}, "USER_DAILY_BUDGET_USD"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], env: dict[str, str], says: str) -> None:
    done = _run(args, "postgresql://nobody@127.0.0.1:9/never-reached", **env)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr
