"""Contract test (docs/architecture.md, "Undocumented behaviour we rely on"; run by
scripts/upgrade_check on the newest structlog). workers/logging.py keeps rich (~90 ms)
out of every CLI command's start: structlog imports rich as an optional dependency
(``import rich`` in a try), so while it loads an ``ImportError`` for rich is all it
takes; rich itself stays importable for the tables the CLI draws. Should structlog ever
import rich another way, the first test fails (and the CLI slows down by the figure in
docs/benchmarks.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.contract
ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
import workers.logging
import structlog.dev, structlog.tracebacks
print("rich loaded:", "rich" in sys.modules)
print("structlog saw rich:", structlog.dev.rich is not None or structlog.tracebacks.rich is not None)
workers.logging.configure_logging("INFO", "console")
try:
    raise ValueError("boom")
except ValueError:
    workers.logging.get_logger("probe").exception("failed")
import rich.table  # the CLI's tables: rich still loads once asked for
print("rich loaded after:", "rich" in sys.modules)
"""


def _probe() -> subprocess.CompletedProcess[str]:
    # The caller's PYTHONPATH first: scripts/upgrade_check puts the newest releases there.
    inherited = os.environ.get("PYTHONPATH")
    pythonpath = f"{inherited}{os.pathsep}{ROOT}" if inherited else str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_structlog_loads_without_rich_and_rich_still_loads_after() -> None:
    done = _probe()
    assert done.returncode == 0, done.stderr
    assert "rich loaded: False" in done.stdout, (
        "structlog now imports rich some other way than an optional `import rich`: "
        "workers/logging.py no longer keeps rich out of the CLI's start"
    )
    assert "structlog saw rich: False" in done.stdout
    assert "rich loaded after: True" in done.stdout


def test_a_console_line_still_carries_the_traceback() -> None:
    done = _probe()
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stderr
    assert "Traceback (most recent call last)" in done.stderr  # plain_traceback's form
    assert "ValueError: boom" in done.stderr
