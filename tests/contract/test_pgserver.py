"""Contract test: the one private name of pgserver we use (db/embedded.py:
postgres_bin_dir reads ``pgserver._commands.POSTGRES_BIN_PATH``, the bundled client
tools for backup and restore)."""

from __future__ import annotations

import pytest

from db.embedded import postgres_bin_dir

pytestmark = [pytest.mark.contract]


def test_the_bundled_postgres_tools_are_where_we_look() -> None:
    pytest.importorskip("pgserver")
    found = postgres_bin_dir()
    assert found is not None, "pgserver no longer has _commands.POSTGRES_BIN_PATH"
    for tool in ("pg_dump", "pg_restore", "psql"):
        assert (found / tool).is_file(), f"{tool} is not in {found}"
