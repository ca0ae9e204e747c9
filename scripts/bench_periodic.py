"""What runs on a timer or on an operator's refresh, timed at scale (issue 20).

Builds (``--build``, once: it is kept between runs) a database of ``--entries``
entries for ``--people`` people on the server of ``--server`` (DATABASE_URL, else
127.0.0.1:5432; database ``emotionviz_scale`` by default; the mix is in scripts/bench/scale_data.py), then runs every registered
periodic statement (scripts/bench/periodic.py: stuck leases, due intake turns,
``status``, the console's overview, charts and failures, the metrics gauges, the
dead-letter listing's rows, the scheduled recompute's planning, the reconciler) a few
times on a warm cache and prints, for each: the median time, the plan's node types,
and any sequential scan of a table over 10,000 rows. Target: <= 50 ms each at 10M
rows (moonshot 5 ms), no sequential scan of a large table.

Usage:
  .venv/bin/python scripts/bench_periodic.py --build --entries 10000000 --people 100000
  .venv/bin/python scripts/bench_periodic.py [--runs 5] [--only NAME] [--json FILE]
  (exit 0: every statement met the target; 1: one did not; 2: no data set)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
# This checkout's code, not the one the virtualenv has installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import periodic
import scale_data

from db import migrate

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", action="store_true", help="(re)build the data set first")
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument(
        "--server",
        default=os.environ.get("DATABASE_URL") or DEFAULT_SERVER,
        help="any database URL on the server (default: DATABASE_URL, else the local one)",
    )
    parser.add_argument("--database", default=scale_data.SCALE_DB, help="the data set's database")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per statement")
    parser.add_argument("--only", action="append", help="only these statements (repeatable)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--target-ms", type=float, default=50.0)
    args = parser.parse_args()

    url = scale_data.scale_url(args.server, args.database)
    mark = scale_data.read_mark(url)
    if args.build or mark is None:
        if not args.build:
            print(f"no data set in {args.database}: run with --build", file=sys.stderr)
            return 2
        print(f"building {args.entries:,} entries for {args.people:,} people in {args.database}")
        mark = scale_data.build(url, args.entries, args.people)
        size = scale_data.database_size(url)
        print(f"built in {mark.seconds:.0f} s; database size {size / 2**30:.1f} GiB")
    else:
        # Kept between runs: bring it to the migrations' head (new indexes, new tables).
        started = time.monotonic()
        migrate.upgrade(url)
        print(
            f"data set: {mark.entries:,} entries, {mark.people:,} people, built "
            f"{mark.built_at} (migrated to head in {time.monotonic() - started:.1f} s)"
        )
    results = periodic.run_all(url, runs=args.runs, only=args.only)
    print(periodic.table(results, target_ms=args.target_ms))
    if args.json:
        args.json.write_text(
            json.dumps(
                {"data_set": mark.__dict__, "results": [r.as_dict() for r in results]}, indent=2
            )
        )
    return 0 if all(r.meets(args.target_ms) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
