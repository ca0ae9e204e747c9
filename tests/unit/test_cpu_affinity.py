"""WORKER_CPU_AFFINITY=spread (workers/entrypoints/cpu_affinity.py): the shares, the
rank, and the pinning of every thread of a real process."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from workers.entrypoints.cpu_affinity import cpu_share, pin_threads, process_rank


def test_processes_as_many_as_cpus_get_one_each() -> None:
    assert [cpu_share([0, 1], rank, 2) for rank in range(2)] == [{0}, {1}]


def test_a_share_is_even_and_contiguous_with_the_remainder_first() -> None:
    shares = [cpu_share(range(8), rank, 3) for rank in range(3)]
    assert shares == [{0, 1, 2}, {3, 4, 5}, {6, 7}]
    assert [cpu_share([0, 1, 2, 3], rank, 2) for rank in range(2)] == [{0, 1}, {2, 3}]


def test_more_processes_than_cpus_take_them_in_turn() -> None:
    assert [cpu_share([0, 1], rank, 5) for rank in range(5)] == [{0}, {1}, {0}, {1}, {0}]


def test_one_process_keeps_every_cpu_it_was_given() -> None:
    # A container's CPU set need not start at 0 nor be contiguous.
    assert cpu_share([5, 3, 9], 0, 1) == {3, 5, 9}


def test_a_rank_beyond_the_processes_wraps() -> None:
    assert cpu_share([0, 1, 2, 3], 3, 2) == cpu_share([0, 1, 2, 3], 1, 2)


@pytest.mark.parametrize(("allowed", "processes"), [([], 2), ([0, 1], 0)])
def test_nothing_to_share_is_an_error(allowed: list[int], processes: int) -> None:
    with pytest.raises(ValueError, match="no CPU to share"):
        cpu_share(allowed, 0, processes)


def _report_rank(queue: multiprocessing.Queue[int | None]) -> None:
    queue.put(process_rank())


def test_the_rank_is_the_order_the_parent_started_its_processes_in() -> None:
    # Dramatiq's CLI starts its worker processes first, in order: the n-th is Process-n.
    context = multiprocessing.get_context("fork")
    queue: multiprocessing.Queue[int | None] = context.Queue()
    procs = [
        context.Process(target=_report_rank, args=(queue,), name=f"Process-{n}") for n in (1, 2)
    ]
    for proc in procs:
        proc.start()
    ranks = sorted(queue.get(timeout=30) for _ in procs)
    for proc in procs:
        proc.join(timeout=30)
    assert ranks == [0, 1]


def test_a_process_not_started_as_a_worker_has_no_rank() -> None:
    assert process_rank() is None  # the test runner's main process


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_every_thread_already_running_and_every_thread_started_after_is_pinned() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    target = frozenset(allowed[-1:])
    started, stop = threading.Event(), threading.Event()

    def wait() -> None:
        started.set()
        stop.wait(30)

    before = threading.Thread(target=wait)
    before.start()
    started.wait(10)
    later = threading.Thread(target=stop.wait, args=(30,))
    try:
        assert pin_threads(target) >= 2  # this thread and the one already running
        later.start()  # inherits its starter's CPUs
        for tid in os.listdir("/proc/self/task"):
            status = Path(f"/proc/self/task/{tid}/status").read_text()
            line = next(x for x in status.splitlines() if x.startswith("Cpus_allowed_list"))
            assert line.split()[-1] == str(allowed[-1]), line
    finally:
        stop.set()
        before.join()
        if later.is_alive():
            later.join()
        os.sched_setaffinity(0, set(allowed))  # this test process's other tests
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), set(allowed))
            except ProcessLookupError:
                continue
