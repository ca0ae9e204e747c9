"""The chaos suite's short run (scripts/chaos.py --short) against the test servers:
real workers, scheduler and emulator through kill -9, a Redis flush, killed connections,
API faults, a poison entry and hostile input, with no operator. Exit 0 and the table's
zeros are the assertion."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _figure(table: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}\s+(\S+)", table, re.MULTILINE)
    assert match, f"{label!r} missing from the table:\n{table}"
    return match.group(1)


def test_the_short_chaos_run_loses_nothing_duplicates_nothing_and_heals(
    pg_server_url: str, redis_server_url: str
) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "chaos.py"),
            "--short",
            "--database-url",
            pg_server_url,
            "--redis-url",
            redis_server_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=420,
    )
    table = proc.stdout
    assert "verdict: PASS" in table, table + proc.stderr[-3000:]
    assert proc.returncode == 0
    for label in (
        "failed unexpectedly",
        "lost (not terminal at the end)",
        "duplicated (rows/entry > 1)",
        "duplicated (images/entry > 1)",
        "orphan image files",
        "secrets found",
    ):
        assert _figure(table, label) == "0", table
    assert _figure(table, "poison entry") == "failed", table
