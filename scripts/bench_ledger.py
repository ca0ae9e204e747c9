"""What the paid-call ledger (issue 23.3) adds to an entry: its two paid calls' rows
(one INSERT in autocommit each, in its own unit of work, as the provider wrappers write
them) and, with USER_DAILY_BUDGET_USD set, the two budget checks (a person's spend
today, read at most once per BUDGET_CACHE_S per process).

Run in this process against a throw-away database (bootstrap's pool, as a worker's),
blocks of BLOCK entries in turn so the machine's drift falls on every mode alike:

- ``record``: the two rows of an entry (analysis, image);
- ``budget, cached``: two checks of a person checked within the cache period;
- ``budget, read``: two checks of a person whose spend is read (BUDGET_CACHE_S=0: the
  worst case, a new person every call).

Printed: wall and CPU ms per entry of each (``time.thread_time``: this thread's CPU,
the driver's included), and the rows written. It asserts nothing. For scale: an entry's
whole CPU cost in a worker is ~25 ms (docs/benchmarks.md, bench_cost).

Usage: .venv/bin/python scripts/bench_ledger.py [--entries 2000] [--block 100]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

from common import bench_database

from domain.ledger import Attempt, CallOwner
from workers import bootstrap
from workers.services.ledger import PaidCallLedger
from workers.settings import get_settings

ANALYSIS = Attempt("gemini-3.5-flash", input_tokens=420, output_tokens=380)
IMAGE = Attempt("gemini-3.1-flash-image", input_tokens=110, output_tokens=1290, image=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--block", type=int, default=100)
    args = parser.parse_args()
    with bench_database() as url:
        os.environ["DATABASE_URL"] = url
        get_settings.cache_clear()
        bootstrap.database.cache_clear()
        prices = get_settings().prices()
        plain = PaidCallLedger(bootstrap.unit_of_work, prices, None)
        cached = PaidCallLedger(bootstrap.unit_of_work, prices, Decimal(1000), cache_s=3600)
        reading = PaidCallLedger(bootstrap.unit_of_work, prices, Decimal(1000), cache_s=0)
        people = [CallOwner(uuid.uuid4(), uuid.uuid4()) for _ in range(50)]

        def record(i: int) -> None:
            owner = people[i % len(people)]
            plain.record("analysis", owner, ANALYSIS)
            plain.record("image", owner, IMAGE)

        def budget_cached(i: int) -> None:
            owner = people[i % len(people)]
            cached.check_budget(owner)
            cached.check_budget(owner)

        def budget_read(i: int) -> None:
            owner = people[i % len(people)]
            reading.check_budget(owner)
            reading.check_budget(owner)

        modes: dict[str, Callable[[int], None]] = {
            "record (2 rows)": record,
            "budget, cached (2 checks)": budget_cached,
            "budget, read (2 checks)": budget_read,
        }
        for mode in modes.values():  # warm: the pool, prepared statements, the cache
            for i in range(len(people)):
                mode(i)
        wall: dict[str, list[float]] = {name: [] for name in modes}
        cpu: dict[str, list[float]] = {name: [] for name in modes}
        done = 0
        while done < args.entries:
            for name, mode in modes.items():
                started, started_cpu = time.perf_counter(), time.thread_time()
                for i in range(done, done + args.block):
                    mode(i)
                wall[name].append((time.perf_counter() - started) / args.block * 1000)
                cpu[name].append((time.thread_time() - started_cpu) / args.block * 1000)
            done += args.block
        with bootstrap.unit_of_work() as uow:
            rows = uow.session.execute(  # a count for the reader, not a figure
                __import__("sqlalchemy").text("SELECT count(*) FROM model_calls")
            ).scalar_one()
        print(f"entries per mode: {done}, blocks of {args.block}; rows written: {rows}")
        print(f"{'per entry':<28}{'wall ms':>10}{'CPU ms':>10}   (median of blocks; p90 wall)")
        for name in modes:
            p90 = statistics.quantiles(wall[name], n=10)[-1]
            print(
                f"{name:<28}{statistics.median(wall[name]):>10.3f}"
                f"{statistics.median(cpu[name]):>10.3f}   p90 {p90:.3f}"
            )
        bootstrap.database().engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
