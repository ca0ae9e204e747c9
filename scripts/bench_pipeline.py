"""Pipeline benchmarks (issue: visualization pipeline). Prints figures and ratios
measured in one run; it asserts nothing.

  (a) entries/s end to end: local providers, and the gemini provider against the
      emulator at zero latency, next to Dramatiq's no-op actor on the same broker,
      middleware and worker settings. Target: emulator >= 0.25 x no-op.
  (b) emulator latency analysis 1 s + image 4 s, 256 entries, 64 calls in flight:
      wall time against the ideal 256 / 64 x 5 s = 20 s. Target <= 1.2 x.
  (c) worker RSS growth over 5,000 entries (after a 500-entry warm-up). Target < 10 %.

Usage: .venv/bin/python scripts/bench_pipeline.py [--only a|b|c] [--entries N]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers; works in a
throw-away database and Redis namespace.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

from common import (
    OUT,
    Emulator,
    Workers,
    base_env,
    bench_database,
    entry_ids,
    make_entries,
    publish_raw,
    status_counts,
    visualize_and_wait,
    wait_drained,
)

PROCESSES, THREADS = 2, 16


def run_pipeline(
    env: dict[str, str],
    db_url: str,
    count: int,
    processes: int,
    threads: int,
    sample_rss_at: int | None = None,
) -> tuple[float, float | None, float | None]:
    """Returns (seconds, rss after warm-up MB, rss at end MB)."""
    make_entries(db_url, count)
    ids = entry_ids(db_url)
    workers = Workers(env, processes, threads, ["visualizations"])
    warm_rss = None
    try:
        started = time.perf_counter()
        if sample_rss_at:
            visualize_and_wait(env, ids[:sample_rss_at])
            warm_rss = workers.children_rss_mb()
            ids = ids[sample_rss_at:]
        visualize_and_wait(env, ids)
        elapsed = time.perf_counter() - started
        end_rss = workers.children_rss_mb()
    finally:
        workers.stop()
    counts = status_counts(db_url)
    if counts.get("completed", 0) != count:
        raise RuntimeError(f"not every entry completed: {counts}")
    return elapsed, warm_rss, end_rss


def run_noop(env: dict[str, str], count: int) -> float:
    workers = Workers(env, PROCESSES, THREADS, ["bench_noop"])
    try:
        started = time.perf_counter()
        publish_raw(
            env["REDIS_URL"],
            env["REDIS_NAMESPACE"],
            "bench_noop",
            "bench.noop",
            [{"i": i} for i in range(count)],
        )
        wait_drained(env["REDIS_URL"], env["REDIS_NAMESPACE"], "bench_noop")
        return time.perf_counter() - started
    finally:
        workers.stop()


def bench_a(db_url: str, entries: int) -> None:
    print(f"\n(a) throughput, {PROCESSES} processes x {THREADS} threads, {entries} entries")
    env = base_env(db_url, f"bench-a-{os.getpid()}")
    noop_n = entries * 4
    noop_s = run_noop(env, noop_n)
    noop_rate = noop_n / noop_s
    print(
        f"    dramatiq no-op actor      {noop_n:6d} msgs  {noop_s:7.2f} s  {noop_rate:8.1f} msg/s"
    )
    local_s, _, _ = run_pipeline({**env, "PROVIDER": "local"}, db_url, entries, PROCESSES, THREADS)
    print(
        f"    pipeline, local providers {entries:6d} ents  {local_s:7.2f} s  "
        f"{entries / local_s:8.1f} ent/s  ratio {entries / local_s / noop_rate:.3f}"
    )
    emulator = Emulator(0, 0)
    try:
        emu_env = {
            **env,
            "PROVIDER": "gemini",
            "GEMINI_API_KEY": "bench-key",
            "GEMINI_BASE_URL": emulator.url,
        }
        emu_s, _, _ = run_pipeline(emu_env, db_url, entries, PROCESSES, THREADS)
        calls = emulator.stats()
    finally:
        emulator.stop()
    ratio = entries / emu_s / noop_rate
    print(
        f"    pipeline, emulator (0 ms) {entries:6d} ents  {emu_s:7.2f} s  "
        f"{entries / emu_s:8.1f} ent/s  ratio {ratio:.3f}  (target >= 0.25)  calls {calls}"
    )


def bench_b(db_url: str) -> None:
    count, in_flight, per_entry = 256, 64, 5.0
    ideal = count / in_flight * per_entry
    print(f"\n(b) latency-bound: analysis 1 s + image 4 s, {count} entries, {in_flight} in flight")
    emulator = Emulator(1.0, 4.0)
    try:
        env = {
            **base_env(db_url, f"bench-b-{os.getpid()}"),
            "PROVIDER": "gemini",
            "GEMINI_API_KEY": "bench-key",
            "GEMINI_BASE_URL": emulator.url,
            "ANALYSIS_MAX_CONCURRENT": str(in_flight),
            "IMAGE_MAX_CONCURRENT": str(in_flight),
        }
        elapsed, _, _ = run_pipeline(env, db_url, count, 2, in_flight // 2)
    finally:
        emulator.stop()
    print(
        f"    wall {elapsed:.2f} s, ideal {ideal:.1f} s, ratio {elapsed / ideal:.3f} (target <= 1.2)"
    )


def bench_c(db_url: str, count: int) -> None:
    warm = 500
    print(f"\n(c) worker memory over {count} entries (RSS of the worker processes)")
    emulator = Emulator(0, 0)
    try:
        env = {
            **base_env(db_url, f"bench-c-{os.getpid()}"),
            "PROVIDER": "gemini",
            "GEMINI_API_KEY": "bench-key",
            "GEMINI_BASE_URL": emulator.url,
        }
        elapsed, warm_rss, end_rss = run_pipeline(
            env, db_url, count + warm, PROCESSES, THREADS, sample_rss_at=warm
        )
    finally:
        emulator.stop()
    assert warm_rss and end_rss
    growth = (end_rss - warm_rss) / warm_rss
    print(
        f"    RSS after {warm} warm-up entries {warm_rss:.1f} MB, after {count} more "
        f"{end_rss:.1f} MB: growth {growth * 100:.1f} % (target < 10 %), {elapsed:.1f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["a", "b", "c"])
    parser.add_argument("--entries", type=int, default=1000, help="entries for (a)")
    parser.add_argument("--memory-entries", type=int, default=5000, help="entries for (c)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    with bench_database() as db_url:
        if args.only in (None, "a"):
            bench_a(db_url, args.entries)
        if args.only in (None, "b"):
            bench_b(db_url)
        if args.only in (None, "c"):
            bench_c(db_url, args.memory_entries)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
