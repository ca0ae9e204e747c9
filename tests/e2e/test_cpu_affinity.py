"""WORKER_CPU_AFFINITY=spread with the real `emotionviz worker`: each of its processes
keeps all its threads on its own share of the CPUs, and the work still completes."""

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

pytestmark = [pytest.mark.e2e]


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cpus_of_threads(pid: int) -> set[str]:
    """The distinct Cpus_allowed_list of the process's threads."""
    found = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list"))
        found.add(line.split()[-1])
    return found


def _cpus(listed: str) -> set[int]:
    cpus: set[int] = set()
    for part in listed.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to share")
def test_each_worker_process_runs_on_its_own_share_of_the_cpus(
    harness: Harness, tmp_path: Path
) -> None:
    log = tmp_path / "pinned.log"
    env = {
        **harness.env,
        "PYTHONPATH": str(Path.cwd()),
        "WORKER_CPU_AFFINITY": "spread",
        "LOG_LEVEL": "INFO",
    }
    command = [sys.executable, "-m", "workers.entrypoints.cli", "worker"]
    command += ["--processes", "2", "--threads", "3"]
    with log.open("ab") as out:
        worker = subprocess.Popen(
            command,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while log.read_text(errors="replace").count("worker process pinned to its CPUs") < 2:
            assert worker.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        listed = {pid: _cpus_of_threads(pid) for pid in _children(worker.pid)}
        # The pinned processes: every thread on one share, short of all the CPUs.
        shares = [
            _cpus(cpus)
            for (cpus,) in (lists for lists in listed.values() if len(lists) == 1)
            if _cpus(cpus) != os.sched_getaffinity(0)
        ]
        assert len(shares) == 2, listed
        assert shares[0].isdisjoint(shares[1])
        assert shares[0] | shares[1] <= os.sched_getaffinity(0)

        # Pinned, the work goes on as before.
        harness.stop_workers()
        marker = "p" + uuid.uuid4().hex[:8]
        entry_id, user_id = harness.make_entry(marker)
        harness.publish(entry_id, user_id)
        assert harness.wait_for(entry_id, timeout=60)["status"] == "completed"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=90)
        except subprocess.TimeoutExpired:
            worker.kill()
        harness.start_worker()
