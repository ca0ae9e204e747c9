"""WORKER_CPU_AFFINITY=spread: each worker process keeps its threads on its own share of
the machine's CPUs (docs/operations.md, "Scale").

A process's threads take turns holding its one GIL, and a job hands it over each time it
waits: the claim, the two calls, their rate gates, the checkpoint, the files, the
completion, some 150 hand-overs per entry. Between threads on different cores each one
is a cross-core wake-up on cold caches; on one core it is not. On the 2-core reference
machine (2 processes) that is 6-8 % less worker CPU per entry at 16 threads and up to
20 % less at 256, where the floor alone (two calls per entry) gains nothing measurable
(docs/benchmarks.md, "Per-entry CPU, 2026-12-03"). What a share gives up: C code that
lets the GIL go (the WebP encoder, the PNG decoder) no longer runs beside the process's
Python on another core.

Off by default: a process knows only its rank among its own ``emotionviz worker``'s
processes, so two worker groups on one machine would both pin their first process to
the same CPU. Turn it on where one worker group has the machine (or its container's
CPU set) to itself, with WORKER_PROCESSES set to the processes it runs.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from typing import Any

from dramatiq import Middleware

from workers.logging import get_logger
from workers.settings import CpuAffinity as AffinityMode

log = get_logger("emotionviz.worker")


def cpu_share(allowed: Sequence[int], rank: int, processes: int) -> frozenset[int]:
    """The CPUs of the process of ``rank`` (0-based) among ``processes``: an even,
    contiguous share of ``allowed`` (the first ranks take one more when it does not
    divide), or one CPU each, in turn, when there are more processes than CPUs."""
    cpus = sorted(allowed)
    if not cpus or processes < 1:
        raise ValueError("no CPU to share, or no process to share it with")
    rank %= processes
    if processes >= len(cpus):
        return frozenset({cpus[rank % len(cpus)]})
    size, extra = divmod(len(cpus), processes)
    start = rank * size + min(rank, extra)
    return frozenset(cpus[start : start + size + (1 if rank < extra else 0)])


def process_rank() -> int | None:
    """This process's rank among the worker processes its parent started: Dramatiq's
    CLI starts them first, in order, and multiprocessing names the n-th "Process-n"
    (None: a process not started that way)."""
    prefix, _, number = multiprocessing.current_process().name.rpartition("-")
    if prefix == "Process" and number.isdigit() and int(number) > 0:
        return int(number) - 1
    return None


def pin_threads(cpus: frozenset[int]) -> int:
    """Keep every thread of this process on ``cpus``; threads started later inherit
    their starter's. The number of threads pinned."""
    pinned = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
        pinned += 1
    return pinned


class CpuAffinity(Middleware):
    """Pins the process before its worker threads start (``before_worker_boot``), so
    they and every thread they start share the process's CPUs."""

    def __init__(self, mode: AffinityMode, processes: int) -> None:
        self.mode, self.processes = mode, processes

    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        if self.mode != "spread":
            return
        rank = process_rank()
        if rank is None:
            log.warning("CPU affinity not set: not a worker process of emotionviz worker")
            return
        try:
            share = cpu_share(list(os.sched_getaffinity(0)), rank, self.processes)
            threads = pin_threads(share)
        except (AttributeError, OSError, ValueError) as exc:  # no sched_* (not Linux)
            log.warning("CPU affinity not set", reason=f"{type(exc).__name__}: {exc}")
            return
        log.info(
            "worker process pinned to its CPUs",
            cpus=sorted(share),
            rank=rank,
            processes=self.processes,
            threads=threads,
        )
