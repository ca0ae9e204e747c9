"""Supervision, as docker-compose's restart policy or systemd does it: when one worker
process is killed, `emotionviz worker` exits non-zero; started again, it resumes the
work, and every entry completes once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.conftest import Harness

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _children(pid: int) -> list[int]:
    try:
        found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(child) for child in found]


def _env(harness: Harness) -> dict[str, str]:
    # A short grace: the killed process's prefetched messages (never claimed, so no
    # row) wait in its acks set until Dramatiq's maintenance finds them, at random; the
    # reconciler adopts their entries once the grace has passed.
    return {**harness.env, "RECONCILE_GRACE_S": "5", "PYTHONPATH": str(Path.cwd())}


def _start(harness: Harness, log: Path) -> subprocess.Popen[bytes]:
    env = {**_env(harness), "LEASE_S": "10"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.entrypoints.cli",
                "worker",
                "--processes",
                "2",
                "--threads",
                "2",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_a_killed_worker_process_restarts_the_worker_and_the_work_resumes(
    harness: Harness, tmp_path: Path
) -> None:
    harness.stop_workers()
    log = tmp_path / "supervised.log"
    marker = "s" + uuid.uuid4().hex[:8]
    entries = [harness.make_entry(f"{marker}-{i}") for i in range(8)]
    harness.emulator.state.latency_image_s = 0.5  # so the kill lands mid-batch
    for entry_id, user_id in entries:
        harness.publish(entry_id, user_id)
    worker = _start(harness, log)
    try:
        deadline = time.monotonic() + 60
        while harness.statuses(marker).get("processing", 0) == 0:
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        victims = _children(worker.pid)
        assert victims, "no worker process found"
        os.kill(victims[0], signal.SIGKILL)
        assert worker.wait(timeout=90) != 0  # the whole worker stops: a supervisor's cue

        harness.emulator.state.latency_image_s = 0.0
        worker = _start(harness, log)  # the supervisor restarts it
        deadline = time.monotonic() + 120
        while harness.statuses(marker).get("completed", 0) < len(entries):
            # What the scheduler does every minute: republish work whose lease ran out.
            reconciled = subprocess.run(
                [sys.executable, "-m", "workers.entrypoints.cli", "reconcile", "--json"],
                env=_env(harness),
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert time.monotonic() < deadline, (
                f"{harness.statuses(marker)}\nreconcile: {reconciled.returncode} "
                f"{reconciled.stdout[-500:]} {reconciled.stderr[-1500:]}\n"
                f"{log.read_text()[-3000:]}"
            )
            time.sleep(2)
        assert harness.statuses(marker) == {"completed": len(entries)}
        calls = harness.calls(marker)
        # At most the calls in flight when the process died are paid twice.
        assert calls.get("analysis", 0) <= len(entries) + 2, calls
    finally:
        harness.emulator.state.latency_image_s = 0.0
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=90)
        except subprocess.TimeoutExpired:
            worker.kill()
        harness.start_worker()
