"""Running one of our scripts that prints a table and a verdict (scripts/chaos.py,
scripts/fleet.py) against the test servers, and reading its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def passing_table(script: str, *args: str, pg_url: str, redis_url: str, timeout: float) -> str:
    """The table ``scripts/<script>`` prints; fails the test unless it says PASS, exit 0."""
    proc = subprocess.run(
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
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    table = proc.stdout
    assert "verdict: PASS" in table, table + proc.stderr[-3000:]
    assert proc.returncode == 0, table + proc.stderr[-3000:]
    return table


def figure(table: str, label: str) -> str:
    """What the table's row ``label`` says (the rest of its line)."""
    match = re.search(rf"^{re.escape(label)}\s+(.+)$", table, re.MULTILINE)
    assert match, f"{label!r} missing from the table:\n{table}"
    return match.group(1).strip()
