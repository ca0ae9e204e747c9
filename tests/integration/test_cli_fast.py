"""The CLI answers at once (issue 24, item 7): its parser is built from a light
registry, so ``--help`` (the whole CLI's and each command's) imports none of the heavy
parts; a command's module loads when the command runs. What is checked is what gets
imported (real processes, ``-X importtime``), not a time: scripts/bench_cli.py times it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RUN_ID, DatabaseFactory
from workers.entrypoints import commands
from workers.entrypoints.cli import build_parser
from workers.entrypoints.commands import Lazy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# The issue names the first five; the rest are heavy too and have no place in --help.
HEAVY = (
    "sqlalchemy",
    "dramatiq",
    "google.genai",
    "PIL",
    "alembic",
    "psycopg",
    "redis",
    "pydantic_settings",
    "structlog",
    "rich",
    "workers.settings",
    "workers.bootstrap",
)


def imported(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, set[str]]:
    """(exit code, every module imported) of ``python argv`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "cumulative" not in line
    }
    return done.returncode, modules


def heavy_among(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def _leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["job", "--help"],
        ["status", "--help"],
        ["dlq", "list", "--help"],
        ["analytics", "recompute", "--help"],
        ["doctor", "--help"],
        ["console", "--help"],
        ["demo", "--help"],
    ],
    ids=" ".join,
)
def test_help_imports_nothing_heavy(argv: list[str]) -> None:
    code, modules = imported(["-m", "workers.entrypoints.cli", *argv])
    assert code == 0
    assert "workers.entrypoints.commands" in modules  # the registry was read
    assert not heavy_among(modules), f"emotionviz {' '.join(argv)} imports {heavy_among(modules)}"


def test_a_bad_argument_is_one_line_without_the_heavy_parts() -> None:
    code, modules = imported(["-m", "workers.entrypoints.cli", "job", "not-a-uuid"])
    assert code == 2
    assert not {"sqlalchemy", "dramatiq", "alembic"} & modules


def test_the_check_sees_a_heavy_import() -> None:
    # The probe above can fail: a command's module does import the heavy parts.
    code, modules = imported(["-c", "import workers.entrypoints.commands.jobs"])
    assert code == 0
    assert {"sqlalchemy", "workers.bootstrap"} <= set(heavy_among(modules))


def test_every_command_names_a_handler_that_exists() -> None:
    # A misspelt name would otherwise surface only when an operator runs the command.
    leaves = list(_leaves(build_parser()))
    assert len(leaves) >= 25
    for path, parser in leaves:
        handler = parser.get_default("handler")
        assert callable(handler), f"emotionviz {' '.join(path)} has no handler"
        if isinstance(handler, Lazy):
            function = getattr(importlib.import_module(handler.module), handler.function, None)
            assert callable(function), f"emotionviz {' '.join(path)}: {handler} is not there"


def test_the_registry_mirrors_the_values_it_shows() -> None:
    from domain.messages import QUEUES, EntryCreated
    from workers.observability.connection_budget import INTAKE_PROCESSES, INTAKE_THREADS
    from workers.services.media import ORPHAN_MIN_AGE_S

    assert commands.QUEUES == QUEUES
    assert EntryCreated.queue_name == commands.DEFAULT_QUEUE
    assert commands.ORPHAN_MIN_AGE_S == ORPHAN_MIN_AGE_S
    assert (commands.INTAKE_PROCESSES, commands.INTAKE_THREADS) == (
        INTAKE_PROCESSES,
        INTAKE_THREADS,
    )


def test_a_reading_command_loads_no_migration_tool(
    database_factory: DatabaseFactory, redis_server_url: str
) -> None:
    # `job` needs the database, not Alembic (db/errors.py knows its errors without it).
    name, url = database_factory.create()
    try:
        env = {
            "DATABASE_URL": url,
            "REDIS_URL": redis_server_url,
            "REDIS_NAMESPACE": f"evt:{RUN_ID}:fast",
        }
        code, modules = imported(
            ["-m", "workers.entrypoints.cli", "job", "00000000-0000-0000-0000-000000000001"], env
        )
        assert code == 1  # no such entry: the command ran to its end
        # (-X importtime does not list what importlib.import_module loads itself: the
        # handler's module shows by what it imports)
        assert "workers.operations.jobs" in modules and "sqlalchemy" in modules
        assert not any(m == "alembic" or m.startswith("alembic.") for m in modules)
    finally:
        database_factory.drop(name)


def test_alembic_errors_are_translated_without_importing_alembic_first() -> None:
    from alembic.util import AutogenerateDiffsDetected, CommandError

    from db.errors import translate_database_error

    assert str(translate_database_error(CommandError("no such revision"))) == (
        "migration: no such revision"
    )
    diffs = AutogenerateDiffsDetected("new table", None, [])  # type: ignore[arg-type]
    assert "models and database schema differ" in str(translate_database_error(diffs))


# What only a worker needs (issue 24.7): `status` and `job` read Redis and the database
# and must not pay for these. redis-py imports OpenTelemetry's metrics SDK itself when
# it is installed; our tracing (its trace SDK and exporter) is ours to keep out. The
# dramatiq package itself loads (~10 ms: workers/messaging/redis_keys.py names queues
# with dramatiq.common), its brokers do not.
WORKER_ONLY = (
    "dramatiq.brokers",
    "google.genai",
    "PIL",
    "pika",
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
    "workers.observability.tracing",
    "workers.providers",
    "workers.services",
    "workers.messaging.broker",
    "workers.messaging.producer",
)


@pytest.mark.parametrize("argv", [["status"], ["status", "--json"], ["job", "ENTRY"]], ids=" ".join)
def test_reading_commands_load_no_worker_part(
    argv: list[str], database_factory: DatabaseFactory, redis_server_url: str
) -> None:
    name, url = database_factory.create()  # migrated: the command runs to its end
    try:
        env = {
            "DATABASE_URL": url,
            "REDIS_URL": redis_server_url,
            "REDIS_NAMESPACE": f"evt:{RUN_ID}:fast-read",
        }
        entry = "00000000-0000-0000-0000-000000000001"
        argv = [entry if part == "ENTRY" else part for part in argv]
        code, modules = imported(["-m", "workers.entrypoints.cli", *argv], env)
        assert code == (1 if argv[0] == "job" else 0)  # job: no such entry, read to the end
        assert "sqlalchemy" in modules and "redis" in modules  # it did read both
        loaded = sorted(
            m for m in modules if any(m == w or m.startswith(w + ".") for w in WORKER_ONLY)
        )
        assert not loaded, f"emotionviz {' '.join(argv)} imports {loaded}"
        if argv == ["status", "--json"]:  # no table drawn: no rich (structlog's probe of
            # it, answered ImportError, shows as a bare "rich" line: workers/logging.py)
            assert not any(m.startswith("rich.") for m in modules)
    finally:
        database_factory.drop(name)
