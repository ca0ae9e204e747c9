"""A fleet on one box (issue 21): M machines, each its own process groups (worker,
scheduler; the last two also the console), machine name, metrics port and folder,
reaching PostgreSQL (through a shared PgBouncer, and directly for sessions) and Redis
through its own fault-injecting TCP proxies on loopback; pictures in a real
S3-compatible store (SeaweedFS) shared by all. Upstream publishes N entries and K intake
conversations while the run kills one whole machine (SIGKILL, no shutdown), partitions
another from Redis for 30 s and then from PostgreSQL for 30 s, and slows a third's links
by 200 ms. Prints a table; exits 1 on any loss, duplicate, extra paid call beyond those
in flight at the faults, a recovery over 120 s, connections over the budget or a picture
a machine cannot read; 3 on the hard timeout.

    scripts/fleet [--quick] [--machines M] [--entries N] [--conversations K]
    scripts/fleet --scale 1,2,4 [--latency 2,8]   throughput at M machines (no faults)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from chaos_parts.procs import hard_timeout  # noqa: E402
from fleet_parts.run import FleetRun, ScaleRun  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="the CI size (under 5 minutes)")
    p.add_argument("--machines", type=int, help="machines (default 4; at least 4 with faults)")
    p.add_argument("--entries", type=int, help="entries published (default 240; quick 60)")
    p.add_argument("--conversations", type=int, help="intake conversations (default 20; quick 6)")
    p.add_argument("--threads", type=int, help="worker threads per machine (default 8; quick 4)")
    p.add_argument(
        "--scale",
        help="throughput mode: comma-separated machine counts (e.g. 1,2,4), no faults",
    )
    p.add_argument(
        "--latency",
        default=None,
        help="emulated analysis,image seconds (default 0.3,0.6; scale 2,8)",
    )
    p.add_argument(
        "--quota",
        type=int,
        default=0,
        help="scale mode: a shared image quota per minute (emulator and IMAGE_RPM) for a fill run",
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("TEST_DATABASE_URL", ""),
        help="a PostgreSQL server where a scratch database may be created "
        "(default TEST_DATABASE_URL, else the embedded server)",
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("TEST_REDIS_URL", ""),
        help="Redis (a unique namespace is used and deleted; default TEST_REDIS_URL, else embedded)",
    )
    p.add_argument("--timeout", type=float, help="hard overall limit, s (default 900; quick 280)")
    p.add_argument("--keep", action="store_true", help="keep the logs folder")
    args = p.parse_args(argv)
    if args.scale:
        try:
            args.scale = [int(m) for m in args.scale.split(",")]
        except ValueError:
            p.error(f"--scale takes machine counts like 1,2,4, got {args.scale!r}")
        if any(m < 1 or m > 8 for m in args.scale):
            p.error("--scale: machine counts are 1-8")
        args.latency = args.latency or "2,8"
        args.threads = args.threads or 16
        args.timeout = args.timeout or 1800.0
    else:
        args.machines = args.machines or 4
        if args.machines < 4:
            p.error("--machines: at least 4 (one killed, one partitioned, one slowed, one healthy)")
        args.latency = args.latency or "0.3,0.6"
        args.threads = args.threads or (4 if args.quick else 8)
        args.entries = args.entries if args.entries is not None else (60 if args.quick else 240)
        args.conversations = (
            args.conversations if args.conversations is not None else (6 if args.quick else 20)
        )
        args.timeout = args.timeout or (280.0 if args.quick else 900.0)
    try:
        analysis, image = (float(x) for x in args.latency.split(","))
    except ValueError:
        p.error(f"--latency takes two seconds figures like 2,8, got {args.latency!r}")
    args.latency = (analysis, image)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    run: FleetRun | ScaleRun = ScaleRun(args) if args.scale else FleetRun(args)

    timer = hard_timeout("fleet", args.timeout + 90, run.cleanup)
    print(f"fleet {time.strftime('%Y-%m-%d %H:%M:%S %Z')}: {run.describe()}", flush=True)
    try:
        code = run.execute()
    except KeyboardInterrupt:
        code = 130
    finally:
        run.cleanup()
        timer.cancel()
    return code


if __name__ == "__main__":
    sys.exit(main())
