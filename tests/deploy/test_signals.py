"""Long-running commands stop cleanly on SIGTERM, also as PID 1 (a container without
an init), where the kernel drops a signal that has no handler."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pid_namespaces_work() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = [unshare, "--pid", "--fork", "--kill-child", "true"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


@pytest.fixture
def scheduler_env(redis_server_url: str) -> Iterator[dict[str, str]]:
    namespace = f"evt:sig:{uuid.uuid4().hex[:8]}"
    yield {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "REDIS_URL": redis_server_url,
        "REDIS_NAMESPACE": namespace,
        "LOG_FORMAT": "json",
    }
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)


def _start(prefix: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "workers.entrypoints.cli", "scheduler"],
        env=env,
        cwd=REPO_ROOT / "tests",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_scheduled(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the jobs are registered
    assert line.startswith("scheduled "), line + (proc.stderr.read() if proc.stderr else "")


def _stop(proc: subprocess.Popen[str], pid: int) -> tuple[int, float, str]:
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the scheduler ignored SIGTERM") from None
    return proc.returncode, time.monotonic() - started, out


def test_scheduler_exits_promptly_and_cleanly_on_sigterm(scheduler_env: dict[str, str]) -> None:
    proc = _start([], scheduler_env)
    _wait_scheduled(proc)
    code, seconds, out = _stop(proc, proc.pid)
    assert code == 0 and "scheduler stopped" in out
    assert seconds < 3


@pytest.mark.skipif(not _pid_namespaces_work(), reason="needs PID namespaces (unshare)")
def test_scheduler_as_pid_1_exits_on_sigterm(scheduler_env: dict[str, str]) -> None:
    unshare = str(shutil.which("unshare"))
    proc = _start([unshare, "--pid", "--fork", "--kill-child"], scheduler_env)
    _wait_scheduled(proc)
    # The scheduler is unshare's only child, and PID 1 of its namespace.
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    code, seconds, out = _stop(proc, int(children[0]))
    assert code == 0 and "scheduler stopped" in out
    assert seconds < 3
