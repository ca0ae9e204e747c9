"""The chaos suite's short run (scripts/chaos.py --short) against the test servers:
real workers, scheduler and emulator through kill -9, a Redis flush, killed connections,
API faults, a poison entry and hostile input, with no operator. Exit 0 and the table's
zeros are the assertion."""

from __future__ import annotations

import pytest

from tests.script_runs import figure, passing_table

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_short_chaos_run_loses_nothing_duplicates_nothing_and_heals(
    pg_server_url: str, redis_server_url: str
) -> None:
    table = passing_table(
        "chaos.py", "--short", pg_url=pg_server_url, redis_url=redis_server_url, timeout=420
    )
    for label in (
        "failed unexpectedly",
        "lost (not terminal at the end)",
        "duplicated (rows/entry > 1)",
        "duplicated (images/entry > 1)",
        "orphan image files",
        "secrets found",
    ):
        assert figure(table, label).split()[0] == "0", table
    assert figure(table, "poison entry").split()[0] == "failed", table
