"""Fairness benchmark (issue 23.2): can one person's import delay another's first
picture? Prints figures and ratios measured in one run; it asserts nothing. Targets:
B's latency / idle latency <= 2 (moonshot 1.2); A alone within 5 % of the throughput of
the code before the change.

Setup: the Gemini emulator (in this process) with --analysis-latency and
--image-latency (1 s + 1 s), IMAGE_RPM and ANALYSIS_RPM far above what the run asks
(the quota does not dominate), real worker processes (--processes x --threads, 2 x 8),
a throw-away database and Redis namespace per run. Entries are published as an upstream
Python service does (the producer API's unit of work: the dispatch recorded on the row,
then the message): A's import in one unit of work, B's entry in another right after.

Runs (each with fresh workers and an empty queue):
  idle     one entry on idle workers, --idle-samples times: the median is the idle
           latency (publish -> row completed);
  fair     A publishes --entries, then B publishes 1: B's latency, over the idle latency;
  solo     A alone publishes --solo-entries: entries / (publish -> last completed), for
           the code before the change (a git worktree of --base, its own workers on the
           same database server and emulator) and after, alternated --solo-rounds times;
           the ratio after / before of the summed times;
  fifo     (--fifo) the fair run on the code before the change: B's latency today;
  capped   (--solo-cap N) A alone again under USER_MAX_IN_FLIGHT=N: what a cap that
           leaves B a thread (a cap-only design) costs A;
  claims   (--claim-cost N) per statement, N each, in this process: the claim before
           (its own entry), the fair claim (one person's N entries pooled), and the
           yield check a job runs after its analysis.

Usage: .venv/bin/python scripts/bench_fairness.py [--entries 2000] [--solo-entries 800]
       [--base COMMIT] [--fifo] [--processes 2] [--threads 8]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

from common import OUT, ROOT, base_env, bench_database, libpq

from db.engine import make_engine, make_session_factory
from db.repositories.entry_pipeline import EntryPipelineRepository, FairClaim
from db.uow import UnitOfWork
from domain.messages import EntryCreated
from workers.devtools.emulator import EmulatorState, start_in_thread
from workers.messaging import redis_keys
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.settings import Settings

API_KEY = "bench-key"
# The commit before the fair dispatch (3a6ed01's parent).
DEFAULT_BASE = "b357fc5"


class Pool:
    """Worker processes of the code at ``root`` (this checkout, or the base worktree)."""

    def __init__(self, env: dict[str, str], root: Path, processes: int, threads: int) -> None:
        self.env = env
        self.log_path = OUT / f"fairness-{uuid.uuid4().hex[:6]}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dramatiq",
                "workers.entrypoints.worker",
                "--processes",
                str(processes),
                "--threads",
                str(threads),
                "--skip-logging",
                "--queues",
                "visualizations",
            ],
            env={**env, "PYTHONPATH": str(root)},
            cwd=root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(env["REDIS_URL"])
        deadline = time.monotonic() + 60
        while client.zcard(redis_keys.heartbeats(env["REDIS_NAMESPACE"])) < processes:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"workers did not start; see {self.log_path}")
            time.sleep(0.1)
        client.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        client = redis.Redis.from_url(self.env["REDIS_URL"])
        keys = list(client.scan_iter(match=f"{self.env['REDIS_NAMESPACE']}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


class Run:
    """One database, people with entries, and a publisher into one namespace."""

    def __init__(self, db_url: str, emulator_url: str, namespace: str) -> None:
        self.db_url = db_url
        self.env = {
            **base_env(db_url, namespace),
            "PROVIDER": "gemini",
            "GEMINI_API_KEY": API_KEY,
            "GEMINI_BASE_URL": emulator_url,
            "METRICS_PORT": "0",
        }
        self.engine = make_engine(db_url, pool_size=2)
        broker = build_broker(
            Settings(_env_file=None, redis_namespace=namespace),  # type: ignore[call-arg]
            self.env["REDIS_URL"],
        )
        self.factory = make_session_factory(self.engine)
        self.producer = Producer(broker)
        self.conn = psycopg.connect(libpq(db_url), autocommit=True)

    def person(self, entries: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
        user = self.conn.execute(
            "INSERT INTO users (email, hashed_password, name) "
            "VALUES ('p-' || gen_random_uuid() || '@example.com', 'x', 'Bench') RETURNING id"
        ).fetchone()
        assert user is not None
        rows = self.conn.execute(
            "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
            "SELECT %s, 'Benchmark situation number ' || g, ARRAY['joy'], 0.5 "
            "FROM generate_series(1, %s) g RETURNING id",
            (user[0], entries),
        ).fetchall()
        return user[0], [r[0] for r in rows]

    def publish(self, user: uuid.UUID, entries: list[uuid.UUID]) -> None:
        with UnitOfWork(self.factory, self.producer) as uow:
            for entry in entries:
                uow.publish(EntryCreated(entry_id=entry, user_id=user))
            uow.commit()
        assert uow.publish_error is None, uow.publish_error

    def completed(self, entries: list[uuid.UUID]) -> int:
        row = self.conn.execute(
            "SELECT count(*) FROM visualizations WHERE entry_id = ANY(%s) AND status = 'completed'",
            (entries,),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def wait(self, entries: list[uuid.UUID], started: float, timeout: float = 1800) -> float:
        """Seconds from ``started`` until every entry is completed."""
        while self.completed(entries) < len(entries):
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"entries not completed in {timeout} s")
            time.sleep(0.02)
        return time.monotonic() - started

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()


@contextmanager
def fresh_run(emulator_url: str) -> Iterator[Run]:
    with bench_database() as db_url:
        run = Run(db_url, emulator_url, f"bench-fair-{uuid.uuid4().hex[:6]}")
        try:
            yield run
        finally:
            run.close()


@contextmanager
def base_worktree(commit: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fair-base-")) / "tree"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), commit],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    try:
        yield path
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(path)], cwd=ROOT, capture_output=True
        )


def idle_latency(run: Run, root: Path, args: argparse.Namespace) -> list[float]:
    pool = Pool(run.env, root, args.processes, args.threads)
    try:
        samples = []
        for _ in range(args.idle_samples):
            user, [entry] = run.person(1)
            time.sleep(1.5)  # idle: every consumer is back in its wait
            started = time.monotonic()
            run.publish(user, [entry])
            samples.append(run.wait([entry], started))
        return samples
    finally:
        pool.stop()


def fair_run(run: Run, root: Path, args: argparse.Namespace) -> tuple[float, float, int]:
    """B's latency behind A's import, the time A's publish took, and how many of A's
    entries were completed when B's was."""
    a_user, a_entries = run.person(args.entries)
    b_user, [b_entry] = run.person(1)
    pool = Pool(run.env, root, args.processes, args.threads)
    try:
        time.sleep(1.5)
        started = time.monotonic()
        run.publish(a_user, a_entries)
        a_published = time.monotonic() - started
        b_started = time.monotonic()
        run.publish(b_user, [b_entry])
        b_latency = run.wait([b_entry], b_started, timeout=3600)
        return b_latency, a_published, run.completed(a_entries)
    finally:
        pool.stop()


def solo_run(run: Run, root: Path, args: argparse.Namespace, cap: int = 0) -> float:
    user, entries = run.person(args.solo_entries)
    env = {**run.env, "USER_MAX_IN_FLIGHT": str(cap)} if cap else run.env
    pool = Pool(env, root, args.processes, args.threads)
    try:
        time.sleep(1.5)
        started = time.monotonic()
        run.publish(user, entries)
        return run.wait(entries, started)
    finally:
        pool.stop()


def claim_cost(run: Run, entries: int) -> dict[str, tuple[float, float]]:
    """Per statement, wall and client CPU ms: the claim before (its own entry), the fair
    claim (one person's import pooled, as A's), and the yield check after an analysis
    (nobody else waiting: it gives nothing back)."""
    old_user, old_entries = run.person(entries)
    new_user, new_entries = run.person(entries)
    run.publish(old_user, old_entries)
    run.publish(new_user, new_entries)
    # The old claim's rows leave the pool, or the fair claim would find them first.
    run.conn.execute("DELETE FROM fair_waiting WHERE user_id = %s", (old_user,))
    costs: dict[str, tuple[float, float]] = {}
    with psycopg.connect(libpq(run.db_url), autocommit=True) as conn:
        repo = EntryPipelineRepository(conn)
        claims: list[FairClaim] = []

        def fair(entry: uuid.UUID) -> None:
            claims.append(repo.fair_claim(entry, new_user, None, 60, 0))

        def timed(name: str, calls: list[Callable[[], object]]) -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            for call in calls:
                call()
            n = len(calls)
            costs[name] = (
                (time.perf_counter() - wall) * 1000 / n,
                (time.thread_time() - cpu) * 1000 / n,
            )

        timed(
            "claim before (own entry)",
            [partial(repo.claim_entry, e, old_user, None, 60) for e in old_entries],
        )
        timed(
            "fair claim",
            [partial(fair, e) for e in new_entries],
        )
        held = [c.taken[1] for c in claims if c.taken]
        timed("yield check", [partial(repo.yield_turn, c, new_user) for c in held])
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--solo-entries", type=int, default=800)
    parser.add_argument("--solo-rounds", type=int, default=1)
    parser.add_argument("--idle-samples", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--analysis-latency", type=float, default=1.0)
    parser.add_argument("--image-latency", type=float, default=1.0)
    parser.add_argument("--base", default=DEFAULT_BASE, help="the commit before the change")
    parser.add_argument("--fifo", action="store_true", help="also B's latency before")
    parser.add_argument("--solo-cap", type=int, default=0, help="also A alone under a cap")
    parser.add_argument(
        "--claim-cost", type=int, default=400, help="entries per claim kind (0: skip)"
    )
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    state = EmulatorState(
        api_key=API_KEY,
        latency_analysis_s=args.analysis_latency,
        latency_image_s=args.image_latency,
    )
    emulator = start_in_thread(state, label="fairness")
    print(
        f"workers {args.processes} x {args.threads}, model latency "
        f"{args.analysis_latency} s + {args.image_latency} s, quotas far above the load",
        flush=True,
    )
    if args.claim_cost:
        with fresh_run(emulator.url) as run:
            for name, (wall, cpu) in claim_cost(run, args.claim_cost).items():
                print(f"{name}: {wall:.3f} ms per statement, client CPU {cpu:.3f} ms")
    with base_worktree(args.base) as base:
        with fresh_run(emulator.url) as run:
            idle = idle_latency(run, ROOT, args)
        idle_s = statistics.median(idle)
        print(f"idle latency (after): {', '.join(f'{s:.2f}' for s in idle)} s; median {idle_s:.2f}")

        with fresh_run(emulator.url) as run:
            b_s, a_pub_s, a_done = fair_run(run, ROOT, args)
        print(
            f"fair (after): A published {args.entries} in {a_pub_s:.2f} s, then B 1: "
            f"B's latency {b_s:.2f} s = {b_s / idle_s:.2f} x idle (target <= 2, moonshot "
            f"1.2); A had {a_done} completed by then"
        )
        if args.fifo:
            with fresh_run(emulator.url) as run:
                fifo_idle = statistics.median(idle_latency(run, base, args))
            with fresh_run(emulator.url) as run:
                fb_s, _, fa_done = fair_run(run, base, args)
            print(
                f"fifo (before {args.base}): idle {fifo_idle:.2f} s; B's latency "
                f"{fb_s:.2f} s = {fb_s / fifo_idle:.1f} x idle; A had {fa_done} completed"
            )

        before: list[float] = []
        after: list[float] = []
        for _ in range(args.solo_rounds):
            for label, root, times in (("before", base, before), ("after", ROOT, after)):
                with fresh_run(emulator.url) as run:
                    seconds = solo_run(run, root, args)
                times.append(seconds)
                print(
                    f"solo ({label}): A alone, {args.solo_entries} entries in {seconds:.2f} s "
                    f"= {args.solo_entries / seconds:.2f} entries/s",
                    flush=True,
                )
        ratio = sum(before) / sum(after)
        print(
            f"A alone, throughput after / before: {ratio:.3f} "
            f"({(ratio - 1) * 100:+.1f} %; target within 5 %)"
        )
        if args.solo_cap:
            # What a cap-only design (option b) costs A alone: it must leave B a thread.
            with fresh_run(emulator.url) as run:
                capped = solo_run(run, ROOT, args, cap=args.solo_cap)
            print(
                f"solo (after, USER_MAX_IN_FLIGHT={args.solo_cap}): {capped:.2f} s; "
                f"throughput / before {sum(before) / len(before) / capped:.3f}"
            )
    emulator.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
