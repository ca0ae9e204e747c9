"""Start a benchmark's clock once the worker processes have finished booting.

Dramatiq's CLI starts its fork processes (our metrics server, workers/observability/
exposition.py) after the workers report ready, and that process then imports the
application: ~1.3 s of CPU on this machine, which landed inside the measured window
(0.7 ms per entry of bench_cost's 2,000, more of bench_scale's 1,024, and CPU taken
from the first wave). The floor's processes are measured from after their own boot
("ready"), so the workers are too.
"""

from __future__ import annotations

import time

import psutil
from common import cpu_seconds


def wait_quiet(
    root_pid: int, *, idle_cpu_s: float = 0.02, step_s: float = 0.5, limit_s: float = 30.0
) -> list[psutil.Process]:
    """Wait until ``root_pid``'s descendants spend under ``idle_cpu_s`` of CPU in a
    ``step_s`` interval twice in a row (or ``limit_s`` passed); their list then."""
    deadline = time.monotonic() + limit_s
    quiet = 0
    kids = psutil.Process(root_pid).children(recursive=True)
    before = cpu_seconds(kids)
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(step_s)
        kids = psutil.Process(root_pid).children(recursive=True)
        now = cpu_seconds(kids)
        quiet = quiet + 1 if now - before < idle_cpu_s else 0
        before = now
    return kids
