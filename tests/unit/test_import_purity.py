"""Importing the actors module (and the rest of the product's code paths a test needs)
builds no broker, starts no embedded server and opens no connection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

# Any attempt to connect anywhere, or to start a server, fails the import loudly.
_PROBE = """
import socket, subprocess, sys
def refuse(*a, **k):
    raise SystemExit("connection attempted during import")
socket.socket.connect = refuse
socket.create_connection = refuse
subprocess.Popen.__init__ = lambda *a, **k: refuse()
import dramatiq
import workers.entrypoints.actors
import workers.services.visualize, workers.services.intake, workers.services.reconcile
import dramatiq.broker as b
assert b.global_broker is None, "a broker was built at import"
print("ok")
"""


def test_actors_module_imports_with_nothing_reachable(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "DATA_DIR": str(tmp_path / "data"),
    }
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
    assert not (tmp_path / "data").exists()
