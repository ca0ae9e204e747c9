"""Calls in flight on one machine (issue 14, deliverable 1). Prints figures measured in
one run; it asserts nothing.

1,024 entries through the gemini provider (google-genai SDK) against the emulator at
analysis 2 s + image 8 s, with 512 calls in flight (``processes`` x ``WORKER_THREADS``):
the ideal is ceil(1024 / 512) x 10 s = 20 s; the figure is wall / ideal (target <= 1.2,
moonshot <= 1.05). Also: worker RSS per call in flight (peak RSS during the run over the
calls in flight, and the growth over the idle RSS), and the CPU seconds per entry of the
workers, the emulator, PostgreSQL and Redis, sampled from /proc.

Each ``--model`` is a separate run in this invocation, so their figures compare:
  threads  Dramatiq's worker threads (the default; WORKER_THREADS per process)
  gevent   Dramatiq's gevent worker (``dramatiq-gevent``; needs the gevent package)
  floor    the floor alone (bench/floor.py: the two SDK calls, the image check and the
           thumbnail; no database, broker, rate gate or Dramatiq) on the same processes
           x threads: the bound for any threaded implementation on this machine
  floor-asyncio  the same work as tasks on one event loop per process, through the
           SDK's async client: the bound for async providers
  floor-db the floor with each entry's three writes (the fair claim, the checkpoint,
           the completion: one statement each on the thread's own connection), and
           nothing else of ours: the bound for any worker that writes an entry's steps
           one statement each, whatever its Python costs

The entries all arrive at once, so each wave's answers come back together and their CPU
work runs in bursts between the waits: wall ~ ideal + the bursts, which no number of
threads or processes on 2 cores can hide. The floor model measures that bound.

Each model runs once, or ``--rounds N`` times in turn (the order flipped every round,
as this machine's speed drifts by 10-40 % within minutes): then each round's workers /
floor and their mean. ``--cpu-affinity`` (spread by default, what
docs/operations.md recommends for a machine one worker group has to itself) is the
workers' WORKER_CPU_AFFINITY; the floor's processes are pinned the same way.

Usage: .venv/bin/python scripts/bench_scale.py [--in-flight 512] [--entries 1024]
       [--processes 2] [--models threads floor floor-asyncio] [--analysis-s 2] [--image-s 8]
       [--rounds 1] [--cpu-affinity spread|none]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import floor
import psutil
from common import (
    OUT,
    Emulator,
    Workers,
    base_env,
    bench_database,
    cpu_seconds,
    entry_ids,
    libpq,
    make_entries,
    server_processes,
    status_counts,
    visualize_and_wait,
)
from quiet import wait_quiet


@dataclass
class Sampler:
    """Peak RSS of the workers and CPU seconds of each group of processes, sampled.
    ``servers``: groups looked up again at the end (a server's backends opened during
    the run, PostgreSQL's for the workers' pools, count all their CPU)."""

    workers: Workers
    groups: dict[str, list[psutil.Process]]
    servers: dict[str, Callable[[], list[psutil.Process]]] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _cpu0: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._cpu0 = {name: cpu_seconds(procs) for name, procs in self.groups.items()}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.peak_rss_mb = max(self.peak_rss_mb, self.workers.children_rss_mb())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        spent = {name: cpu_seconds(procs) - self._cpu0[name] for name, procs in self.groups.items()}
        for name, find in self.servers.items():
            known = {(p.pid, _started(p)) for p in self.groups[name]}
            spent[name] += cpu_seconds([p for p in find() if (p.pid, _started(p)) not in known])
        return spent


def _started(proc: psutil.Process) -> float:
    try:
        return proc.create_time()
    except psutil.Error:
        return 0.0


def run_floor(args: argparse.Namespace, model: str, db_url: str) -> float:
    """The floor alone in ``processes`` processes x threads (or tasks), started together;
    its wall / ideal. ``floor-db``: on fresh entries of ``db_url``, with their writes."""
    count, in_flight = args.entries, args.in_flight
    ideal = math.ceil(count / in_flight) * (args.analysis_s + args.image_s)
    threads = in_flight // args.processes
    if model == "floor-db":
        make_entries(db_url, count)
    postgres_cpu: list[float] = []  # when the floor starts, when it is done

    def read_postgres() -> None:  # every backend there, its connections still open
        postgres_cpu.append(cpu_seconds(server_processes("postgres")))

    emulator = Emulator(args.analysis_s, args.image_s)
    try:
        emulator_cpu = cpu_seconds([psutil.Process(emulator.proc.pid)])
        elapsed, cpu = floor.run_processes(
            emulator.url,
            args.processes,
            threads,
            count,
            use_asyncio=model == "floor-asyncio",
            cpu_affinity=args.cpu_affinity,
            db=libpq(db_url) if model == "floor-db" else None,
            on_ready=read_postgres if model == "floor-db" else None,
            on_done=read_postgres if model == "floor-db" else None,
        )
        emulator_cpu = cpu_seconds([psutil.Process(emulator.proc.pid)]) - emulator_cpu
    finally:
        emulator.stop()
    print(
        f"\n{model}: {args.processes} processes x {threads} = {in_flight} in flight, "
        f"{count} entries, analysis {args.analysis_s:g} s + image {args.image_s:g} s"
    )
    print(
        f"    wall {elapsed:.2f} s, ideal {ideal:.1f} s, ratio {elapsed / ideal:.3f}: "
        "the bound for any worker of this model here"
    )
    print(
        f"    CPU floor processes {cpu:.1f} s ({cpu * 1000 / count:.1f} ms/entry), "
        f"emulator {emulator_cpu:.1f} s"
    )
    if model == "floor-db":
        spent = postgres_cpu[-1] - postgres_cpu[0]
        print(
            f"    CPU postgres {spent:.1f} s ({spent * 1000 / count:.1f} ms/entry); "
            f"rows {status_counts(db_url)}"
        )
    return elapsed / ideal


def run(args: argparse.Namespace, db_url: str, model: str) -> float:
    """The workers of ``model`` on ``entries`` entries; their wall / ideal."""
    count, in_flight = args.entries, args.in_flight
    per_entry = args.analysis_s + args.image_s
    ideal = math.ceil(count / in_flight) * per_entry
    threads = in_flight // args.processes
    emulator = Emulator(args.analysis_s, args.image_s)
    env = {
        **base_env(db_url, f"bench-scale-{model}-{os.getpid()}"),
        "PROVIDER": "gemini",
        "GEMINI_API_KEY": "bench-key",
        "GEMINI_BASE_URL": emulator.url,
        "ANALYSIS_MAX_CONCURRENT": str(in_flight),
        "IMAGE_MAX_CONCURRENT": str(in_flight),
        "WORKER_THREADS": str(threads),
        "WORKER_CPU_AFFINITY": args.cpu_affinity,
    }
    make_entries(db_url, count)
    ids = entry_ids(db_url)
    workers = Workers(env, args.processes, threads, ["visualizations"], gevent=model == "gevent")
    try:
        kids = wait_quiet(workers.proc.pid)  # the metrics server's boot is not an entry's
        idle_rss = workers.children_rss_mb()
        sampler = Sampler(
            workers,
            {
                "workers": kids,
                "emulator": [psutil.Process(emulator.proc.pid)],
                "postgres": server_processes("postgres"),
                "redis": server_processes("redis-server"),
            },
            servers={
                "postgres": lambda: server_processes("postgres"),
                "redis": lambda: server_processes("redis-server"),
            },
        )
        started = time.perf_counter()
        visualize_and_wait(env, ids)
        elapsed = time.perf_counter() - started
        cpu = sampler.stop()
    finally:
        workers.stop()
        emulator.stop()
    counts = status_counts(db_url)
    done = counts.get("completed", 0)
    peak = sampler.peak_rss_mb
    print(
        f"\n{model}: {args.processes} processes x {threads} = {in_flight} in flight, "
        f"{count} entries, analysis {args.analysis_s:g} s + image {args.image_s:g} s"
    )
    print(
        f"    wall {elapsed:.2f} s, ideal {ideal:.1f} s, ratio {elapsed / ideal:.3f} "
        f"(target <= 1.2, moonshot <= 1.05); completed {done}/{count} {counts}"
    )
    print(
        f"    worker RSS idle {idle_rss:.0f} MB, peak {peak:.0f} MB: "
        f"{peak * 1024 / in_flight:.0f} KB per call in flight "
        f"({(peak - idle_rss) * 1024 / in_flight:.0f} KB over idle)"
    )
    cpu_line = ", ".join(f"{k} {v:.1f} s ({v * 1000 / count:.1f} ms/entry)" for k, v in cpu.items())
    print(f"    CPU {cpu_line}; total {sum(cpu.values()) / elapsed:.2f} cores busy")
    return elapsed / ideal


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1024)
    parser.add_argument("--in-flight", type=int, default=512)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--analysis-s", type=float, default=2.0)
    parser.add_argument("--image-s", type=float, default=8.0)
    parser.add_argument(
        "--models",
        nargs="+",
        choices=["threads", "gevent", "floor", "floor-asyncio", "floor-db"],
        default=["threads", "floor", "floor-asyncio"],
    )
    parser.add_argument(
        "--cpu-affinity",
        choices=["spread", "none"],
        default="spread",
        help="WORKER_CPU_AFFINITY of the workers, and the floor's processes the same",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the models this many times, in turn"
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
        f"WORKER_CPU_AFFINITY={args.cpu_affinity}"
    )
    if "gevent" in args.models and importlib.util.find_spec("gevent") is None:
        print("gevent is not installed (pip install gevent): that model is skipped")
        args.models = [m for m in args.models if m != "gevent"]
    ratios: dict[str, list[float]] = {model: [] for model in args.models}
    with bench_database() as db_url:
        for round_no in range(args.rounds):
            if args.rounds > 1:
                print(f"\n--- round {round_no + 1} of {args.rounds}")
            # In turn, the order flipped every round: both see the machine's drift.
            for model in args.models if round_no % 2 == 0 else args.models[::-1]:
                if model.startswith("floor"):
                    ratios[model].append(run_floor(args, model, db_url))
                else:
                    ratios[model].append(run(args, db_url, model))
    if args.rounds > 1:
        print_rounds(ratios)
    return 0


def print_rounds(ratios: dict[str, list[float]]) -> None:
    """Each model's wall / ideal per round and their mean; the workers over the floor
    alone, each round's own pair, and the mean of those."""
    print("\nwall / ideal by round:")
    for model, values in ratios.items():
        listed = " ".join(f"{v:.3f}" for v in values)
        print(f"    {model:14s} {listed}   mean {statistics.mean(values):.3f}")
    for workers in ("threads", "gevent"):
        if workers in ratios and "floor" in ratios:
            pairs = [w / f for w, f in zip(ratios[workers], ratios["floor"], strict=True)]
            listed = " ".join(f"{p:.3f}" for p in pairs)
            print(
                f"    {workers} / floor, same round: {listed}   mean "
                f"{statistics.mean(pairs):.3f} (target <= 1.05)"
            )


if __name__ == "__main__":
    raise SystemExit(main())
