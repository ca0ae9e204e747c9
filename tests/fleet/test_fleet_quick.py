"""The fleet's quick run (scripts/fleet.py --quick, issue 21) against the test servers:
four machines on this box, each behind its own TCP proxies to PgBouncer, PostgreSQL and
Redis, pictures in SeaweedFS; one machine killed, one partitioned from Redis and then
from PostgreSQL for 30 s each, one slowed by 200 ms. Exit 0 and the table's figures are
the assertion."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from workers.devtools.pgbouncer import pgbouncer_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _figure(table: str, label: str) -> str:
    match = re.search(rf"^{re.escape(label)}\s+(.+)$", table, re.MULTILINE)
    assert match, f"{label!r} missing from the table:\n{table}"
    return match.group(1).strip()


@pytest.mark.timeout(420)
def test_the_quick_fleet_run_loses_nothing_and_recovers(
    pg_server_url: str, redis_server_url: str
) -> None:
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed (scripts/test installs Debian's package as root)")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "fleet.py"),
            "--quick",
            "--database-url",
            pg_server_url,
            "--redis-url",
            redis_server_url,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=400,
    )
    table = proc.stdout
    assert "verdict: PASS" in table, table + proc.stderr[-3000:]
    assert proc.returncode == 0
    for label in ("failed", "lost (not terminal at the end)", "duplicated rows (rows/entry > 1)"):
        assert _figure(table, label) == "0", table
    recovery = _figure(table, "recovery after the last fault")
    assert float(recovery.split()[0]) <= 120, table
    pictures = int(_figure(table, "pictures (objects in the store)").split()[0])
    assert pictures >= 60, table
    for reader in _figure(table, "pictures readable from").split(", "):
        assert reader.endswith(f" {pictures}/{pictures}"), table
