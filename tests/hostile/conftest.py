"""Hostile-input harness: the e2e harness (tests/e2e/conftest.py) with a fast watchdog
and no worker started (each test starts the worker it needs).

``HOSTILE_WORKER_SRC=/path/to/checkout`` runs the worker from another checkout (its
code, this test process's emulator and checks): how the figures "before" were taken.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DatabaseFactory
from tests.e2e.conftest import Harness, running_harness

WATCHDOG_ENV = {"WATCHDOG_INTERVAL_S": "0.5"}


@pytest.fixture(scope="module")
def harness(
    database_factory: DatabaseFactory,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    folder = tmp_path_factory.mktemp("hostile")
    with running_harness(
        database_factory, redis_server_url, folder, env=WATCHDOG_ENV, start=False
    ) as h:
        source = os.environ.get("HOSTILE_WORKER_SRC")
        h.source_dir = Path(source) if source else None
        yield h
