"""A test run leaves no process behind: what the session started, it stops.

Every process this run starts carries ``EMOTIONVIZ_TEST_RUN`` in its environment
(tests/conftest.py sets it before the first test; subprocesses inherit it) or runs
under the session's temporary folder. At the end of the session, any such process
still alive (after a grace for ones that are stopping) is named, killed, and fails the
run: a server or worker left running would hold ports, files and CPU on the next run
and hide a missing shutdown.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

MARKER = "EMOTIONVIZ_TEST_RUN"
GRACE_S = 10.0


def _belongs(proc: psutil.Process, run_id: str, basetemp: str | None) -> bool:
    try:
        if proc.environ().get(MARKER) == run_id:
            return True
        where = [proc.cwd(), *proc.cmdline()] if basetemp else []
    except (psutil.Error, OSError):
        return False
    return any(basetemp and part.startswith(basetemp + os.sep) for part in where if part)


def leftovers(run_id: str, basetemp: Path | None, started_at: float) -> list[psutil.Process]:
    """Processes of this run still alive: none of this process's ancestors, all created
    after the session started."""
    mine = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    started_at -= 2.0  # the kernel's start times are coarse (whole seconds here)
    found = []
    for proc in psutil.process_iter(["create_time"]):
        if proc.pid in mine or (proc.info["create_time"] or 0) < started_at:
            continue
        if _belongs(proc, run_id, str(basetemp) if basetemp else None):
            found.append(proc)
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:  # it ended between the two questions
        return False


def wait_for_leftovers(run_id: str, basetemp: Path | None, started_at: float) -> list[str]:
    """Wait up to GRACE_S for the run's processes to end; kill and describe the rest."""
    deadline = time.monotonic() + GRACE_S
    alive = leftovers(run_id, basetemp, started_at)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if _alive(p)]
    described = []
    for proc in alive:
        try:
            described.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
        except psutil.Error:
            continue
    return described
