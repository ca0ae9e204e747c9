"""Running one of our scripts that prints a table and a verdict (scripts/chaos.py,
scripts/fleet.py) against the test servers, and reading its figures."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def passing_table(script: str, *args: str, pg_url: str, redis_url: str, timeout: float) -> str:
    """The table ``scripts/<script>`` prints; fails the test unless it says PASS, exit 0."""
    (table,) = passing_tables(script, [args], pg_url=pg_url, redis_url=redis_url, timeout=timeout)
    return table


def passing_tables(
    script: str,
    runs: Sequence[Sequence[str]],
    *,
    pg_url: str,
    redis_url: str,
    timeout: float,
) -> list[str]:
    """Several runs of ``scripts/<script>`` (one per argument list) at the same time, each
    in its own database and Redis namespace (the scripts make their own): their tables,
    in order; fails the test unless every one says PASS and exits 0. For runs that
    mostly wait (leases running out, restarts), so running them side by side costs the
    suite the longest one instead of their sum."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "scripts" / script),
                *args,
                "--database-url",
                pg_url,
                "--redis-url",
                redis_url,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in runs
    ]
    deadline = time.monotonic() + timeout
    outputs: list[tuple[str, str, int]] = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append((out, err, proc.returncode))
    finally:
        for proc in procs:
            if proc.poll() is None:  # a timeout above: the script's own timer cleans up
                proc.terminate()
                proc.communicate()
    for table, err, code in outputs:
        assert "verdict: PASS" in table, table + err[-3000:]
        assert code == 0, table + err[-3000:]
    return [table for table, _, _ in outputs]


def figure(table: str, label: str) -> str:
    """What the table's row ``label`` says (the rest of its line)."""
    match = re.search(rf"^{re.escape(label)}\s+(.+)$", table, re.MULTILINE)
    assert match, f"{label!r} missing from the table:\n{table}"
    return match.group(1).strip()
