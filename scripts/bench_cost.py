"""CPU cost of one entry, split by part, next to its floor (issue 14, deliverable 2).
Prints figures measured in one run; it asserts nothing.

1. The floor, measured alone in this process, one thread, against the same emulator:
   the two SDK calls as our providers make them (analysis + image, no rate limiter),
   the image check (full decode) and the WebP thumbnail. CPU of this thread only.
2. The split by part: the real service in this process, one thread, each part's own
   thread CPU time (scripts/bench/cost_parts.py), PARTS_ENTRIES entries.
3. The pipeline at zero provider latency: ENTRIES entries through real worker processes
   (gemini provider, SDK, emulator), CPU seconds of every process group read from /proc
   (workers, emulator, PostgreSQL, Redis). Workers minus the split's total is what
   Dramatiq, the consumer and the threads add per message.

The figure: worker CPU per entry / floor (target <= 1.5, moonshot <= 1.2), the floor
being the mean of its measures before and after the pipeline (the machine drifts).
Beside it, like for like: the floor alone on the workers' processes x threads (what
that many threads cost each other, without any of our code), run in ``--rounds``
rounds in turn with the workers, each on as many entries, so that both see the same
drift of the machine's speed.
The servers' CPU on our behalf (PostgreSQL, Redis) and the emulator's are printed
beside it. ``--cpu-affinity`` (spread by default: what docs/operations.md recommends
for a machine one worker group has to itself) is the workers' WORKER_CPU_AFFINITY; the
like-for-like floor's processes are pinned the same way.

Usage: .venv/bin/python scripts/bench_cost.py [--entries 2000] [--processes 2]
       [--threads 16] [--floor-calls 200] [--parts-entries 300] [--rounds 4]
       [--cpu-affinity spread|none]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import psutil
from common import (
    OUT,
    Emulator,
    Workers,
    base_env,
    bench_database,
    cpu_seconds,
    entry_ids,
    make_entries,
    server_processes,
    status_counts,
    visualize_and_wait,
)
from cost_parts import WARM_UP, measure_parts
from floor import PARTS, FloorEntry, run_processes
from quiet import wait_quiet

from workers import bootstrap
from workers.settings import get_settings


def measure_floor(url: str, calls: int) -> dict[str, float]:
    """CPU ms per entry of this thread for the SDK calls, the check and the thumbnail."""
    floor = FloorEntry(url)
    totals = [0.0] * len(PARTS)
    for i in range(calls + 10):  # the first ten warm the connection and the caches
        spent = floor.run()
        if i >= 10:
            totals = [t + s for t, s in zip(totals, spent, strict=True)]
    return {part: t * 1000 / calls for part, t in zip(PARTS, totals, strict=True)}


def split_in_process(
    env: dict[str, str], ids: list[tuple[str, str]]
) -> tuple[dict[str, float], int]:
    """The split by part, this process configured as a worker would be."""
    os.environ.update(env)
    get_settings.cache_clear()
    for function in vars(bootstrap).values():  # the composition root's cached parts
        getattr(function, "cache_clear", lambda: None)()
    bootstrap.configure_process()
    return measure_parts(ids)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--floor-calls", type=int, default=200)
    parser.add_argument("--parts-entries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--cpu-affinity",
        choices=["spread", "none"],
        default="spread",
        help="WORKER_CPU_AFFINITY of the workers, and the like-for-like floor's the same",
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; "
        f"WORKER_CPU_AFFINITY={args.cpu_affinity}"
    )
    emulator = Emulator(0, 0)
    try:
        floor = measure_floor(emulator.url, args.floor_calls)
        print(f"\nfloor, one thread, {args.floor_calls} entries (CPU ms per entry)")
        for part, ms in floor.items():
            print(f"    {part:28s} {ms:7.2f} ms")
        print(f"    {'floor':28s} {sum(floor.values()):7.2f} ms")
        with bench_database() as db_url:
            per_entry, alike_ms = run_pipeline(args, db_url, emulator)
        # Measured again after the pipeline: this machine's speed drifts by 10-20 % over
        # minutes, and the ratio must compare like with like.
        floors = [sum(floor.values()), sum(measure_floor(emulator.url, args.floor_calls).values())]
    finally:
        emulator.stop()
    floor_ms = sum(floors) / 2
    workers_ms = per_entry["workers"]
    all_in = sum(per_entry.values()) - per_entry["emulator"]
    print(
        f"\n    floor before {floors[0]:.2f} ms, after {floors[1]:.2f} ms; mean {floor_ms:.2f} ms"
        f"\n    worker CPU / floor = {workers_ms:.2f} / {floor_ms:.2f} ms = "
        f"{workers_ms / floor_ms:.2f} x (target <= 1.5, moonshot <= 1.2); with "
        f"PostgreSQL and Redis {all_in:.2f} ms = {all_in / floor_ms:.2f} x"
        f"\n    like for like: the floor alone on {args.processes} processes x {args.threads} "
        f"threads, in the same rounds {alike_ms:.2f} ms; worker CPU / that = "
        f"{workers_ms / alike_ms:.2f} x (target <= 1.5)"
    )
    return 0


def _alike_cpu_s(args: argparse.Namespace, emulator: Emulator, entries: int) -> float:
    """CPU seconds of the floor alone on the workers' processes x threads."""
    _, floor_cpu = run_processes(
        emulator.url, args.processes, args.threads, entries, cpu_affinity=args.cpu_affinity
    )
    return float(floor_cpu)


def run_pipeline(
    args: argparse.Namespace, db_url: str, emulator: Emulator
) -> tuple[dict[str, float], float]:
    """The split, then the pipeline in rounds with the like-for-like floor: CPU ms per
    entry of each group of processes, and of the floor alone."""
    env = {
        **base_env(db_url, f"bench-cost-{os.getpid()}"),
        "PROVIDER": "gemini",
        "GEMINI_API_KEY": "bench-key",
        "GEMINI_BASE_URL": emulator.url,
        "WORKER_CPU_AFFINITY": args.cpu_affinity,
    }
    make_entries(db_url, args.entries + args.parts_entries + WARM_UP)
    ids = entry_ids(db_url)
    parts_ids, ids = ids[: args.parts_entries + WARM_UP], ids[args.parts_entries + WARM_UP :]
    parts, measured = split_in_process(env, parts_ids)
    parts_total = sum(parts.values())
    print(f"\nsplit by part, one thread in this process, {measured} entries (thread CPU ms)")
    for part, ms in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"    {part:44s} {ms:7.2f} ms")
    print(f"    {'total':44s} {parts_total:7.2f} ms")
    workers = Workers(env, args.processes, args.threads, ["visualizations"])
    try:
        kids = wait_quiet(workers.proc.pid)  # the metrics server's boot is not an entry's
        groups = {
            "workers": kids,
            "emulator": [psutil.Process(emulator.proc.pid)],
            "PostgreSQL": server_processes("postgres"),
            "Redis": server_processes("redis-server"),
        }
        # Rounds: the floor alone on the same processes x threads (like for like), then
        # the workers on as many entries, in turn. The machine's speed drifts by 10-40 %
        # within minutes (a shared host): taken in turn, both see the same drift.
        spent = dict.fromkeys(groups, 0.0)
        alike_s, elapsed = 0.0, 0.0
        per_round = -(-len(ids) // args.rounds)
        for start in range(0, len(ids), per_round):
            batch = ids[start : start + per_round]
            alike_round = _alike_cpu_s(args, emulator, len(batch))
            before = {name: cpu_seconds(procs) for name, procs in groups.items()}
            started = time.perf_counter()
            visualize_and_wait(env, batch)
            elapsed += time.perf_counter() - started
            round_s = {name: cpu_seconds(procs) - before[name] for name, procs in groups.items()}
            print(
                f"    round of {len(batch)}: floor alone {alike_round * 1000 / len(batch):.2f} ms, "
                f"workers {round_s['workers'] * 1000 / len(batch):.2f} ms per entry"
            )
            alike_s += alike_round
            for name in groups:
                spent[name] += round_s[name]
    finally:
        workers.stop()
    counts = status_counts(db_url)
    n = len(ids)
    per_entry = {name: s * 1000 / n for name, s in spent.items()}
    alike_ms = alike_s * 1000 / n
    print(
        f"\npipeline at 0 ms latency: {n} entries, {args.processes} processes x "
        f"{args.threads} threads: {elapsed:.1f} s, {n / elapsed:.1f} entries/s, {counts}"
    )
    for name, ms in per_entry.items():
        print(f"    {name:36s} {ms:7.2f} ms per entry")
    print(
        f"    {'Dramatiq, consumer, threads':36s} {per_entry['workers'] - parts_total:7.2f} ms "
        "per entry (workers - the split's total)"
    )
    return per_entry, alike_ms


if __name__ == "__main__":
    raise SystemExit(main())
