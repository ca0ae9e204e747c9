"""Analytics benchmark (issue: analytics). Prints figures measured in one run.

Generates ENTRIES entries for USERS users over one year with a realistic skew (a few
people write a lot, most write a little; more entries on weekdays; 1-3 emotions with a
skewed popularity), then for the week and the month, over the same whole periods:
  - the bare aggregate (the recomputation's counts, average and top three, for all users
    at once: no batches, no insights, no window functions, no writes), two ways:
      streamed: a server-side cursor to the client. PostgreSQL never plans a cursor in
        parallel, so this is the aggregate on one core;
      fastest: a plain SELECT, as PostgreSQL runs it fastest with the server's settings
        (a parallel plan where it chooses one: EXPLAIN ANALYZE shows Workers Planned and
        Launched), with JIT on (the server's default) and off, the faster counted. It
        returns ``count(*), count(counts), count(top)`` over the aggregate rather than
        the rows: fetching them (psycopg turns every JSON object and array into Python
        objects) took twice as long as computing them, and the recomputation sends
        nothing to the client either. The counts of the two computed columns are what
        make PostgreSQL compute them: a column nobody reads is dropped from a subquery.
  - the full recomputation as operators run it: `emotionviz analytics recompute
    --inline` in its own process (batches of 500 users, two at a time, insights,
    upsert), timed, with its peak RSS; again over existing rows; and one batch at a
    time,
and prints both ratios (recompute / streamed, recompute / fastest; target <= 1.5 x),
rows/s, and the plan of one batch (indexes).

Where the server runs on this machine, each figure also gets the server's CPU seconds
(the session's own and those of every server process that ended meanwhile: parallel
workers, the command's connections), so that a run on a loaded machine, where wall
times move with the neighbours, still says how much work each side did.

Usage: .venv/bin/python scripts/bench_analytics.py [--entries 1000000] [--users 10000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

# This checkout's modules (the bare aggregate imports the statement's fragments), not
# those of whichever checkout the virtualenv was installed from; then the bench helpers.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import psycopg
from common import ROOT, bench_database, libpq

from domain.periods import PeriodKind, period_containing

GENERATE = """
INSERT INTO users (email, hashed_password, name)
SELECT 'p' || g || '@example.com', 'x', 'Person ' || g FROM generate_series(1, %(users)s) g;

CREATE TEMP TABLE person AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM users;
CREATE INDEX ON person (n);

INSERT INTO emotion_entries (user_id, situation, emotions, intensity, created_at)
SELECT p.id,
       'Generated situation ' || g,
       CASE WHEN r.k = 1 THEN ARRAY[v.e1]
            WHEN r.k = 2 THEN ARRAY[v.e1, v.e2]
            ELSE ARRAY[v.e1, v.e2, v.e3] END,
       round((0.15 + 0.8 * r.x)::numeric, 2),
       %(start)s::timestamptz + r.day * interval '1 day' + r.sec * interval '1 second'
FROM generate_series(1, %(entries)s) g
CROSS JOIN LATERAL (
    SELECT 1 + floor(%(users)s * power(random(), 2.2))::int AS who,   -- heavy writers
           1 + floor(power(random(), 1.6) * 3)::int AS k,              -- mostly one emotion
           random() AS x,
           CASE WHEN random() < 0.2 THEN floor(random() * 365)
                ELSE floor(random() * 52) * 7 + floor(random() * 5) END AS day,  -- weekdays
           floor(random() * 86400) AS sec,
           g AS dep
) r
JOIN person p ON p.n = least(r.who, %(users)s)
CROSS JOIN LATERAL (
    SELECT (ARRAY['anxiety','joy','contentment','frustration','sadness','excitement',
                  'fear','anger','surprise','disgust'])[1 + floor(power(random(), 1.8) * 10)::int] AS e1,
           (ARRAY['joy','sadness','anger','fear','disgust'])[1 + floor(random() * 5)::int] AS e2,
           (ARRAY['surprise','anxiety','contentment','frustration','excitement'])[1 + floor(random() * 5)::int] AS e3,
           r.dep
) v;
"""

# What decides whether, and how wide, PostgreSQL runs a plain SELECT in parallel.
SETTINGS = (
    "max_parallel_workers_per_gather",
    "max_parallel_workers",
    "max_worker_processes",
    "parallel_setup_cost",
    "min_parallel_table_scan_size",
    "jit",
    "work_mem",
    "shared_buffers",
    "autovacuum",
)


def bare_query() -> str:
    """The same aggregate as the recomputation (counts, average, top three), over all
    users at once: no batching, no insights, no window functions, no upsert."""
    from db.analytics_statement import COUNTS_JSON, EMOTION_COUNTS, TOP

    return f"""
WITH totals AS (
    SELECT en.user_id, date_trunc(%(kind)s, en.created_at AT TIME ZONE 'UTC')::date AS period_start,
           count(*) AS total, round(avg(en.intensity), 2) AS avg_intensity,
           {EMOTION_COUNTS}
    FROM emotion_entries en
    WHERE en.created_at >= %(from)s::date::timestamp AT TIME ZONE 'UTC'
      AND en.created_at < %(to)s::date::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1, 2
)
SELECT t.user_id, t.period_start, t.total, t.avg_intensity, {COUNTS_JSON} AS counts,
       {TOP} AS top
FROM totals t
"""


# Every row computed in full (count(col) evaluates col), none sent to the client.
FASTEST = "SELECT count(*), count(counts), count(top) FROM ({bare}) AS bare"


def _ticks(pid: int, fields: tuple[int, ...]) -> float:
    """CPU seconds from /proc/<pid>/stat (fields counted after the command name)."""
    values = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(values[f]) for f in fields) / os.sysconf("SC_CLK_TCK")


class ServerCpu:
    """CPU seconds the PostgreSQL server spends, when it runs on this machine: a session's
    own time, plus the time of every server process that ended meanwhile (parallel
    workers, another process's connections), which the kernel adds to the postmaster's
    children's time when it reaps them. None when the server is elsewhere."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        self.backend = int(row[0]) if row else 0
        try:
            self.postmaster = int(
                Path(f"/proc/{self.backend}/stat").read_text().rsplit(")", 1)[1].split()[1]
            )
            self.start = self._now()
        except (OSError, ValueError, IndexError):
            self.postmaster = 0

    def _now(self) -> float:
        return _ticks(self.backend, (11, 12)) + _ticks(self.postmaster, (13, 14))

    def spent(self) -> float | None:
        if not self.postmaster:
            return None
        time.sleep(0.3)  # ended processes are reaped by the postmaster, asynchronously
        return self._now() - self.start


def cpu_note(seconds: float | None) -> str:
    return "" if seconds is None else f", server CPU {seconds:6.2f} s"


def bare_streamed(
    db_url: str, kind: str, first: date, end: date
) -> tuple[float, int, float | None]:
    with psycopg.connect(libpq(db_url)) as conn:
        conn.execute("SET jit = off")  # as the recomputation does
        cpu = ServerCpu(conn)
        started = time.perf_counter()
        rows = 0
        with conn.cursor(name="bare") as cursor:  # server-side: streamed, never parallel
            cursor.itersize = 10_000
            cursor.execute(bare_query(), {"kind": kind, "from": first, "to": end})
            for _ in cursor:
                rows += 1
        return time.perf_counter() - started, rows, cpu.spent()


def bare_fastest(
    db_url: str, kind: str, first: date, end: date, jit: str
) -> tuple[float, int, float | None]:
    """One plain SELECT (default cursor) with the server's settings but ``jit``."""
    with psycopg.connect(libpq(db_url)) as conn:
        conn.execute(f"SET jit = {jit}")
        cpu = ServerCpu(conn)
        started = time.perf_counter()
        row = conn.execute(
            FASTEST.format(bare=bare_query()), {"kind": kind, "from": first, "to": end}
        ).fetchone()
        elapsed = time.perf_counter() - started
        spent = cpu.spent()
    assert row is not None and row[0] == row[1] == row[2], row
    return elapsed, int(row[0]), spent


def bare_plan(db_url: str, kind: str, first: date, end: date, jit: str) -> list[str]:
    """EXPLAIN ANALYZE of the fastest form: whether the plan went parallel, and how wide."""
    with psycopg.connect(libpq(db_url)) as conn:
        conn.execute(f"SET jit = {jit}")
        plan = [
            str(line[0])
            for line in conn.execute(
                "EXPLAIN (ANALYZE, TIMING OFF, COSTS OFF) " + FASTEST.format(bare=bare_query()),
                {"kind": kind, "from": first, "to": end},
            )
        ]
    keep = ("Workers", "Gather", "Parallel", "Execution Time")
    shown = [line.strip() for line in plan if any(k in line for k in keep)]
    if not any("Workers Planned" in line for line in shown):
        shown.insert(0, "no parallel plan (no Gather node)")
    return shown


def full_recompute(
    db_url: str, kind: str, first: date, last: date, parallel: int = 2
) -> tuple[float, float, str, float | None]:
    env = {**os.environ, "DATABASE_URL": db_url, "LOG_LEVEL": "WARNING"}
    watcher = psycopg.connect(libpq(db_url))  # idle: only to find the server's processes
    cpu = ServerCpu(watcher)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workers.entrypoints.cli",
            "analytics",
            "recompute",
            "--period",
            kind,
            "--from",
            first.isoformat(),
            "--to",
            last.isoformat(),
            "--inline",
            "--quiet",
            "--parallel",
            str(parallel),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    spent = cpu.spent()  # the command's connections ended with it
    watcher.close()
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024, proc.stdout.strip(), spent


def explain_batch(db_url: str, kind: str, first: date, end: date) -> list[str]:
    from sqlalchemy import create_engine, text

    from db.analytics_statement import RECOMPUTE_AND_DROP_EMPTY_SQL, parameters

    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        users = list(conn.execute(text("SELECT id FROM users ORDER BY id LIMIT 500")).scalars())
        plan = (
            conn.execute(
                text("EXPLAIN " + RECOMPUTE_AND_DROP_EMPTY_SQL),
                parameters(kind, users, first, end),  # type: ignore[arg-type]
            )
            .scalars()
            .all()
        )
    engine.dispose()
    return [line for line in plan if "Scan" in line or "Index" in line]


def server_settings(db_url: str) -> str:
    with psycopg.connect(libpq(db_url)) as conn:
        values = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                (list(SETTINGS),),
            ).fetchall()
        )
        version = conn.execute("SHOW server_version").fetchone()
    shown = ", ".join(f"{name}={values[name]}" for name in SETTINGS)
    return f"PostgreSQL {version[0] if version else '?'} on {os.cpu_count()} cores: {shown}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=10_000)
    args = parser.parse_args()
    year_start, year_end = date(2025, 1, 6), date(2026, 1, 5)  # 52 ISO weeks
    with bench_database() as db_url:
        started = time.perf_counter()
        with psycopg.connect(libpq(db_url), autocommit=True) as conn:
            params = {"users": args.users, "entries": args.entries, "start": year_start}
            for statement in GENERATE.split(";\n\n"):
                if statement.strip():
                    conn.execute(statement, params)  # type: ignore[arg-type]
            conn.execute("VACUUM ANALYZE emotion_entries")
            conn.execute("VACUUM ANALYZE users")
            stats = conn.execute(
                "SELECT count(*), count(DISTINCT user_id), max(c), percentile_disc(0.5) WITHIN GROUP (ORDER BY c) "
                "FROM (SELECT user_id, count(*) c FROM emotion_entries GROUP BY 1) s"
            ).fetchone()
        assert stats is not None
        print(
            f"generated {args.entries:,} entries for {args.users:,} users in {time.perf_counter() - started:.1f} s "
            f"({stats[1]:,} users wrote; entries per user: median {stats[3]}, max {stats[2]})"
        )
        print(server_settings(db_url))
        kinds: tuple[PeriodKind, ...] = ("week", "month")
        for kind in kinds:
            last = year_end - date.resolution
            # The recomputation's whole periods, so that both produce the same groups.
            first, end = (
                period_containing(kind, year_start).start,
                period_containing(kind, last).end_exclusive,
            )
            streamed_s, groups, streamed_cpu = bare_streamed(db_url, kind, first, end)
            timed = {jit: bare_fastest(db_url, kind, first, end, jit) for jit in ("on", "off")}
            jit = min(timed, key=lambda j: timed[j][0])
            fastest_s, fastest_groups, fastest_cpu = timed[jit]
            plan = bare_plan(db_url, kind, first, end, jit)
            full_s, peak_mb, summary, full_cpu = full_recompute(db_url, kind, first, last)
            _, _, rerun, rerun_cpu = full_recompute(db_url, kind, first, last)
            with psycopg.connect(libpq(db_url), autocommit=True) as conn:
                conn.execute("TRUNCATE emotion_analytics")
            _, _, serial, serial_cpu = full_recompute(db_url, kind, first, last, parallel=1)

            def field(line: str, name: str) -> float:  # from the command's summary line
                return float(line.rsplit(f"{name}=", 1)[1].split()[0])

            full, again, one = (
                field(summary, "seconds"),
                field(rerun, "seconds"),
                field(serial, "seconds"),
            )
            written = int(field(summary, "rows"))  # into an empty table: one row per group
            same = "same groups" if groups == fastest_groups == written else "GROUPS DIFFER"
            print(
                f"\n{kind} ({first} to {end}, exclusive): {groups:,} groups; recompute wrote {written:,} rows ({same})"
            )
            print(
                f"{kind}: bare aggregate, streamed   {streamed_s:6.2f} s  (server-side cursor: one core"
                f"{cpu_note(streamed_cpu)})"
            )
            print(
                f"{kind}: bare aggregate, fastest    {fastest_s:6.2f} s  (plain SELECT, jit {jit}; "
                f"jit on {timed['on'][0]:.2f} s, off {timed['off'][0]:.2f} s{cpu_note(fastest_cpu)})"
            )
            for line in plan:
                print(f"    {line}")
            print(
                f"{kind}: full recompute             {full:6.2f} s  ratio {full / streamed_s:.2f} to streamed, "
                f"{full / fastest_s:.2f} to fastest (target <= 1.5)  {written / full:,.0f} rows/s, "
                f"{args.entries / full:,.0f} entries/s  [2 batches at a time, the default]"
            )
            print(
                f"{kind}:   the whole command        {full_s:6.2f} s  (with Python start-up), peak RSS {peak_mb:.0f} MB"
            )
            print(
                f"{kind}: re-run, same data          {again:6.2f} s  ratio {again / streamed_s:.2f} / {again / fastest_s:.2f}"
                f"{cpu_note(rerun_cpu)}"
            )
            print(
                f"{kind}: one batch at a time        {one:6.2f} s  ratio {one / streamed_s:.2f} / {one / fastest_s:.2f}"
                f"{cpu_note(serial_cpu)}"
            )
            if full_cpu is not None and fastest_cpu:
                print(
                    f"{kind}: server CPU, recompute / fastest bare aggregate: {full_cpu / fastest_cpu:.2f} "
                    f"({full_cpu:.2f} s / {fastest_cpu:.2f} s; on {os.cpu_count()} idle cores the "
                    f"recompute's wall time is at least {full_cpu / (os.cpu_count() or 1):.2f} s)"
                )
            print(f"    {summary}")
        print("\nplan of one batch (500 users, week):")
        for line in explain_batch(db_url, "week", year_start, year_end):
            print("   ", line.strip()[:160])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
