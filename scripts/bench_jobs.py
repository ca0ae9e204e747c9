"""Finding jobs at ten million entries (issue 24.1): every filter combination of
``emotionviz jobs list`` (and the console's jobs page), its first page, the page after
it and a page a year deep, plus what a bulk replay reads (the dry run's counts, one
batch's pick, rolled back), timed on the scale data set.

The data set is scripts/bench/scale_data.py's (bench_periodic's): built once with
``--build`` in a database of its own and kept; brought to the migrations' head first.
Each case calls the product's repository (db/repositories/job_search.py) exactly as the
CLI does, ``--runs`` times on a warm cache after one untimed run, and prints p50 and p95,
the plan's nodes (EXPLAIN ANALYZE of the statements it sent) and any sequential scan of
a table over 10,000 rows. Target: p95 <= 200 ms per listing, no sequential scan.

Usage:
  .venv/bin/python scripts/bench_jobs.py --build --entries 10000000 --people 100000
  .venv/bin/python scripts/bench_jobs.py [--database NAME] [--runs 20] [--json FILE]
  (exit 0: every case met the target; 1: one did not; 2: no data set)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
# This checkout's code, not the one the virtualenv has installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import periodic
import scale_data
from sqlalchemy import Engine, text

from db import migrate
from db.engine import make_engine, make_session_factory
from db.repositories.job_search import Cursor, JobFilter, JobSearchRepository
from db.uow import UnitOfWork
from workers.operations.job_search import DEFAULT_BATCH, DEFAULT_LIMIT, build_filter

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
# An entry number in scale_data.MIX's failed share: its person's entries all failed.
FAILED_ENTRY = next(start for name, start, _ in scale_data.MIX if name == "failed") + 570


@dataclass
class Case:
    name: str
    flt: JobFilter
    page: str = "first"  # first | second | deep (a year back) | counts | pick


@dataclass
class Timed:
    case: Case
    rows: int = 0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    plans: list[periodic.Plan] = field(default_factory=list)

    @property
    def seq_scans(self) -> list[str]:
        return [s for p in self.plans for s in p.big_seq_scans]

    def meets(self, target_ms: float, plan_target_ms: float) -> bool:
        limit = plan_target_ms if self.case.page == "counts" else target_ms
        return self.p95_ms <= limit and not self.seq_scans


def cases(person: uuid.UUID, failing: uuid.UUID, now: datetime) -> list[Case]:
    """``person``: a person whose jobs completed; ``failing``: one whose jobs all failed
    (scale_data's mix goes by entry number, and a person's entries are every
    ``people``-th one)."""

    def f(**kw: Any) -> JobFilter:
        return build_filter(now=now, **kw)

    user, failer = str(person), str(failing)
    listed = [
        ("no filter", f()),
        ("status completed", f(status="completed")),
        ("status failed", f(status="failed")),
        ("status pending", f(status="pending")),
        ("status processing", f(status="processing")),
        ("pending older than 10m", f(status="pending", older_than="10m")),
        ("class server_error", f(classes=["server_error"])),
        ("class safety since 30d", f(classes=["safety"], since="30d")),
        ("classes server_error+timeout", f(classes=["server_error", "timeout"])),
        ("class timeout older than 1y", f(classes=["timeout"], older_than="365d")),
        ("since 2h", f(since="2h")),
        ("failed since 2h", f(status="failed", since="2h")),
        ("older than 1y", f(older_than="365d")),
        ("since 90d older than 30d", f(since="90d", older_than="30d")),
        ("user", f(user=user)),
        ("user failed (none)", f(user=user, status="failed")),
        ("failing user failed", f(user=failer, status="failed")),
        ("failing user class safety", f(user=failer, classes=["safety"])),
        ("failing user classes safety+timeout", f(user=failer, classes=["safety", "timeout"])),
        ("user since 1y", f(user=user, since="365d")),
    ]
    out = [Case(name, flt) for name, flt in listed]
    out += [Case(f"{name}, page 2", flt, "second") for name, flt in listed[:10]]
    out += [
        Case("failing user failed, page 2", f(user=failer, status="failed"), "second"),
        Case("no filter, a year deep", f(), "deep"),
        Case("status completed, a year deep", f(status="completed"), "deep"),
        Case("class server_error, a year deep", f(classes=["server_error"]), "deep"),
        Case("dry run: every failed row", f(), "counts"),
        Case(
            "dry run: class server_error since 2h",
            f(classes=["server_error"], since="2h"),
            "counts",
        ),
        Case("dry run: class safety", f(classes=["safety"]), "counts"),
        Case("dry run: failing user", f(user=failer), "counts"),
        Case(
            f"replay batch pick ({DEFAULT_BATCH}), class server_error",
            f(classes=["server_error"]),
            "pick",
        ),
        Case(f"replay batch pick ({DEFAULT_BATCH}), any failed", f(), "pick"),
    ]
    return out


def _deep_cursor(engine: Engine) -> Cursor:
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT created_at, id FROM visualizations "
                "WHERE created_at < now() - interval '365 days' "
                "ORDER BY created_at DESC, id DESC LIMIT 1"
            )
        ).one()
    return Cursor(row.created_at, row.id)


def _call(case: Case, deep: Cursor) -> Callable[[UnitOfWork, Cursor | None], Any]:
    def run(uow: UnitOfWork, after: Cursor | None) -> Any:
        repo = JobSearchRepository(uow.session)
        if case.page == "counts":
            return repo.failed_counts(case.flt)
        if case.page == "pick":
            cls = case.flt.classes[0] if case.flt.classes else None
            return repo.pick_failed(case.flt, cls, DEFAULT_BATCH, None)  # rolled back
        start = deep if case.page == "deep" else after
        return repo.page(case.flt, DEFAULT_LIMIT + 1, start)

    return run


def time_case(engine: Engine, case: Case, deep: Cursor, runs: int, sizes: dict[str, int]) -> Timed:
    factory = make_session_factory(engine)
    run = _call(case, deep)
    after: Cursor | None = None
    if case.page == "second":
        with UnitOfWork(factory) as uow:
            first = run(uow, None)
        after = first[DEFAULT_LIMIT - 1].cursor if len(first) >= DEFAULT_LIMIT else None
    with periodic._captured(engine) as seen, UnitOfWork(factory) as uow:
        result = run(uow, after)  # warm-up, and the statements it sends
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        with UnitOfWork(factory) as uow:
            run(uow, after)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    timed = Timed(
        case,
        rows=len(result),
        p50_ms=round(statistics.median(times), 2),
        p95_ms=round(times[min(len(times) - 1, round(0.95 * (len(times) - 1)))], 2),
    )
    for sql, parameters in seen:
        timed.plans.append(periodic.explain(engine, sql, parameters, sizes))
    return timed


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
    parser.add_argument("--runs", type=int, default=20, help="timed runs per case")
    parser.add_argument("--only", action="append", help="only cases whose name has this")
    parser.add_argument("--target-ms", type=float, default=200.0, help="a listing's p95")
    parser.add_argument(
        "--plan-target-ms",
        type=float,
        default=1000.0,
        help="a dry run's p95 (it counts every matching failed row: 100,000 at 10M)",
    )
    parser.add_argument("--plans", action="store_true", help="also print each statement's plan")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    url = scale_data.scale_url(args.server, args.database)
    mark = scale_data.read_mark(url)
    if args.build or mark is None:
        if not args.build:
            print(f"no data set in {args.database}: run with --build", file=sys.stderr)
            return 2
        print(f"building {args.entries:,} entries for {args.people:,} people in {args.database}")
        mark = scale_data.build(url, args.entries, args.people)
        print(f"built in {mark.seconds:.0f} s")
    else:
        started = time.monotonic()
        migrate.upgrade(url)
        print(
            f"data set: {mark.entries:,} entries, {mark.people:,} people, built "
            f"{mark.built_at} in {mark.seconds:.0f} s (migrated to head in "
            f"{time.monotonic() - started:.1f} s)"
        )
    engine = make_engine(url, pool_size=2)
    try:
        sizes = periodic._sizes(engine)
        deep = _deep_cursor(engine)
        person = uuid.UUID(md5_uuid(engine, f"u{mark.people // 2}"))
        failing = uuid.UUID(md5_uuid(engine, f"u{FAILED_ENTRY % mark.people}"))
        chosen = [
            c
            for c in cases(person, failing, datetime.now(UTC))
            if not args.only or any(o in c.name for o in args.only)
        ]
        results = [time_case(engine, c, deep, args.runs, sizes) for c in chosen]
    finally:
        engine.dispose()
    print(
        f"| case | rows | p50 ms | p95 ms | plan | seq scan of a big table | "
        f"p95 <= {args.target_ms:g} ms (dry runs {args.plan_target_ms:g}) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        nodes = "; ".join(n for p in r.plans for n in p.node_types)
        print(
            f"| {r.case.name} | {r.rows} | {r.p50_ms} | {r.p95_ms} | {nodes} | "
            f"{', '.join(r.seq_scans) or 'none'} | {'yes' if r.meets(args.target_ms, args.plan_target_ms) else 'NO'} |"
        )
    if args.plans:
        for r in results:
            for p in r.plans:
                print(f"\n{r.case.name}: {p.execution_ms} ms\n  {p.sql}\n  {p.node_types}")
    listings = [r for r in results if r.case.page != "counts"] or results
    worst = max(listings, key=lambda r: r.p95_ms)
    plans = [r for r in results if r.case.page == "counts"]
    worst_plan = f", dry runs' worst p95 {max(r.p95_ms for r in plans)} ms" if plans else ""
    print(
        f"\n{len(results)} cases, {args.runs} runs each: listings' worst p95 {worst.p95_ms} ms "
        f"({worst.case.name}){worst_plan}; targets {args.target_ms:g} ms "
        f"(dry runs {args.plan_target_ms:g} ms): "
        f"{'met' if all(r.meets(args.target_ms, args.plan_target_ms) for r in results) else 'NOT met'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "data_set": mark.__dict__,
                    "results": [
                        {
                            "case": r.case.name,
                            "rows": r.rows,
                            "p50_ms": r.p50_ms,
                            "p95_ms": r.p95_ms,
                            "plans": [p.__dict__ for p in r.plans],
                        }
                        for r in results
                    ],
                },
                indent=2,
            )
        )
    return 0 if all(r.meets(args.target_ms, args.plan_target_ms) for r in results) else 1


def md5_uuid(engine: Engine, value: str) -> str:
    """scale_data's ids: md5 of a name and a number."""
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT md5(:v)::uuid"), {"v": value}).scalar_one())


if __name__ == "__main__":
    sys.exit(main())
