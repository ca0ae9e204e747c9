"""The fleet's quick run (scripts/fleet.py --quick, issue 21) against the test servers:
four machines on this box, each behind its own TCP proxies to PgBouncer, PostgreSQL and
Redis, pictures in SeaweedFS; one machine killed, one partitioned from Redis and then
from PostgreSQL for 30 s each, one slowed by 200 ms. Exit 0 and the table's figures are
the assertion."""

from __future__ import annotations

import pytest

from tests.script_runs import figure, passing_table
from workers.devtools.pgbouncer import pgbouncer_binary

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.timeout(420)
def test_the_quick_fleet_run_loses_nothing_and_recovers(
    pg_server_url: str, redis_server_url: str
) -> None:
    if pgbouncer_binary() is None:
        pytest.skip("pgbouncer is not installed (scripts/test installs Debian's package as root)")
    table = passing_table(
        "fleet.py", "--quick", pg_url=pg_server_url, redis_url=redis_server_url, timeout=400
    )
    for label in ("failed", "lost (not terminal at the end)", "duplicated rows (rows/entry > 1)"):
        assert figure(table, label) == "0", table
    recovery = figure(table, "recovery after the last fault")
    assert float(recovery.split()[0]) <= 120, table
    pictures = int(figure(table, "pictures (objects in the store)").split()[0])
    assert pictures >= 60, table
    for reader in figure(table, "pictures readable from").split(", "):
        assert reader.endswith(f" {pictures}/{pictures}"), table
