"""Worker CPU per entry of two or more variants, in alternating rounds. Prints figures
measured in one run; it asserts nothing.

This machine's speed drifts by 10-40 % within minutes, more than most changes to the
per-entry path gain, so a change is measured against the code before it in the same
run: each variant (a checkout of the code, and settings) runs its own workers, started
once, and the rounds give each variant the same number of entries in turn (the order
flips every round), through the gemini provider against the emulator at zero latency.
Each round prints the worker CPU per entry of each variant (CPU seconds of its worker
processes from /proc, over the round's entries) and PostgreSQL's; the end, the means,
and how many rounds each variant was the lower.

A variant: LABEL=PATH[:THREADS[:PROCESSES]], PATH a checkout (``git worktree add
/tmp/before HEAD~1``), threads 16 and processes 2 by default; ``--env LABEL:NAME=VALUE``
adds a setting to one variant (``--env pinned:WORKER_CPU_AFFINITY=spread``).

Usage: .venv/bin/python scripts/bench_ab.py before=/tmp/before after=. [--rounds 6]
       [--per-round 300] [--env LABEL:NAME=VALUE ...]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

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
    visualize_and_wait,
)
from quiet import wait_quiet


@dataclass
class Variant:
    label: str
    root: Path
    threads: int
    processes: int
    settings: dict[str, str] = field(default_factory=dict)
    workers_ms: list[float] = field(default_factory=list)
    postgres_ms: list[float] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LABEL=PATH[:THREADS[:PROCESSES]]")
    path, *numbers = rest.split(":")
    root = Path(path).resolve()
    if not (root / "workers" / "entrypoints" / "worker.py").is_file():
        raise argparse.ArgumentTypeError(f"{root}: not a checkout of this project")
    try:
        threads = int(numbers[0]) if numbers else 16
        processes = int(numbers[1]) if len(numbers) > 1 else 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: threads and processes are numbers") from None
    return Variant(label, root, threads, processes)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("variants", nargs="+", type=parse_variant)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--per-round", type=int, default=300)
    parser.add_argument("--env", action="append", default=[], metavar="LABEL:NAME=VALUE")
    args = parser.parse_args()
    variants: list[Variant] = args.variants
    by_label = {v.label: v for v in variants}
    if len(by_label) != len(variants):
        parser.error("each variant needs a label of its own")
    for item in args.env:
        label, _, setting = item.partition(":")
        name, sep, value = setting.partition("=")
        if label not in by_label or not sep or not name:
            parser.error(f"--env {item!r}: expected LABEL:NAME=VALUE with a variant's label")
        by_label[label].settings[name] = value
    OUT.mkdir(exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    emulator = Emulator(0, 0)
    try:
        with bench_database() as db_url:
            run_rounds(args, variants, db_url, emulator)
    finally:
        emulator.stop()
    print()
    for v in variants:
        lower = sum(
            all(v.workers_ms[r] <= o.workers_ms[r] for o in variants if o is not v)
            for r in range(args.rounds)
        )
        print(
            f"{v.label:12s} worker CPU {sum(v.workers_ms) / args.rounds:6.2f} ms per entry, "
            f"PostgreSQL {sum(v.postgres_ms) / args.rounds:5.2f} ms; the lowest in "
            f"{lower} of {args.rounds} rounds"
        )
    return 0


def run_rounds(
    args: argparse.Namespace, variants: list[Variant], db_url: str, emulator: Emulator
) -> None:
    make_entries(db_url, args.rounds * args.per_round * len(variants))
    ids = entry_ids(db_url)
    running = []
    try:
        for v in variants:
            env = {
                **base_env(db_url, f"bench-ab-{v.label}-{os.getpid()}"),
                "PROVIDER": "gemini",
                "GEMINI_API_KEY": "bench-key",
                "GEMINI_BASE_URL": emulator.url,
                "PYTHONPATH": str(v.root),
                **v.settings,
            }
            workers = Workers(env, v.processes, v.threads, ["visualizations"], root=v.root)
            running.append((v, env, workers, wait_quiet(workers.proc.pid)))
        postgres = server_processes("postgres")
        taken = 0
        for r in range(args.rounds):
            for v, env, _workers, kids in running if r % 2 == 0 else running[::-1]:
                batch = ids[taken : taken + args.per_round]
                taken += len(batch)
                cpu0, pg0 = cpu_seconds(kids), cpu_seconds(postgres)
                started = time.perf_counter()
                visualize_and_wait(env, batch)
                elapsed = time.perf_counter() - started
                v.workers_ms.append((cpu_seconds(kids) - cpu0) * 1000 / len(batch))
                v.postgres_ms.append((cpu_seconds(postgres) - pg0) * 1000 / len(batch))
                print(
                    f"round {r} {v.label:12s} worker CPU {v.workers_ms[-1]:6.2f} ms per entry, "
                    f"PostgreSQL {v.postgres_ms[-1]:5.2f} ms, {len(batch) / elapsed:5.1f} "
                    "entries/s",
                    flush=True,
                )
    finally:
        for _v, _env, workers, _kids in running:
            workers.stop()


if __name__ == "__main__":
    raise SystemExit(main())
