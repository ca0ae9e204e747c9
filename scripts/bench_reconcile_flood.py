"""Reconciler flood check (issue 20, deliverable 2): a backlog of old entries behind an
image quota must not grow in the broker, however long it waits. Prints figures measured
in one run; exits 1 if the broker ever held more than the bound, or an entry was paid
for twice.

Setup: a throw-away database with ``--entries`` (1,500) entries dated days ago, each
published once through the producer API; the Gemini emulator with an image quota of
``--quota`` (60) calls per minute and the workers' IMAGE_RPM set to it; one worker
process (``--threads`` 8) on the visualizations and maintenance queues, and the
scheduler with the reconcile defaults (every RECONCILE_EVERY_S = 15 s, grace
RECONCILE_GRACE_S = 300 s, unless given). Every 5 s it samples:

  stored     message bodies the broker holds for the visualizations queue: ready and in
             flight (the queue's hash) plus delayed (the delay queue's hash);
  unfinished entries whose visualization is not completed or failed;
  ratio      stored / unfinished; the bound is 1.1 x unfinished + the prefetch
             (threads x 2, Dramatiq's default).

At the end: the emulator's accepted image and analysis calls against the completed
entries, and per entry (the prompt carries the entry's situation number) how many image
calls it was paid for.

Usage: .venv/bin/python scripts/bench_reconcile_flood.py [--seconds 420] [--entries 1500]
       [--quota 60] [--grace 300] [--every 15] [--threads 8]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

from common import OUT, ROOT, Workers, base_env, bench_database, entry_ids, libpq, make_entries

from db.engine import make_engine, make_session_factory
from db.uow import UnitOfWork
from workers.devtools.emulator import EmulatorState, start_in_thread
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.messaging.redis_keys import queue_keys
from workers.producer_api import ProducerAPI
from workers.settings import Settings

API_KEY = "bench-key"
SITUATION = re.compile(r"Benchmark situation number (\d+)\b")


def stored_messages(client: redis.Redis, namespace: str) -> int:
    keys = queue_keys(namespace, "visualizations")
    return int(client.hlen(keys.ready_bodies)) + int(client.hlen(keys.delayed_bodies))


def unfinished(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM emotion_entries e WHERE NOT EXISTS "
        "(SELECT 1 FROM visualizations v WHERE v.entry_id = e.id "
        "AND v.status IN ('completed', 'failed')))"
    ).fetchone()
    assert row is not None
    return int(row[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=420)
    parser.add_argument("--entries", type=int, default=1500)
    parser.add_argument("--quota", type=int, default=60)
    parser.add_argument("--grace", type=int, default=300)
    parser.add_argument("--every", type=int, default=15)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    prefetch = args.threads * 2
    with bench_database() as db_url:
        make_entries(db_url, args.entries)  # dated up to 59 days ago
        namespace = f"bench-flood-{uuid.uuid4().hex[:6]}"
        state = EmulatorState(
            api_key=API_KEY,
            latency_analysis_s=0.2,
            latency_image_s=0.5,
            quota_image_per_minute=args.quota,
        )
        server = start_in_thread(state, label="flood")
        env = {
            **base_env(db_url, namespace),
            "PROVIDER": "gemini",
            "GEMINI_API_KEY": API_KEY,
            "GEMINI_BASE_URL": server.url,
            "IMAGE_RPM": str(args.quota),
            "RECONCILE_GRACE_S": str(args.grace),
            "RECONCILE_EVERY_S": str(args.every),
            "METRICS_PORT": "0",
        }
        workers = Workers(env, 1, args.threads, ["visualizations", "maintenance"])
        scheduler_log = (OUT / f"scheduler-{namespace}.log").open("wb")
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "workers.entrypoints.cli", "scheduler"],
            env=env,
            cwd=ROOT,
            stdout=scheduler_log,
            stderr=subprocess.STDOUT,
        )
        client = redis.Redis.from_url(env["REDIS_URL"])
        engine = make_engine(db_url, pool_size=2)
        broker = build_broker(
            Settings(_env_file=None, redis_namespace=namespace),  # type: ignore[call-arg]
            env["REDIS_URL"],
        )
        api = ProducerAPI(lambda: UnitOfWork(make_session_factory(engine), Producer(broker)))
        worst = 0.0
        over = 0
        try:
            for entry_id, user_id in entry_ids(db_url):
                api.entry_created(uuid.UUID(entry_id), uuid.UUID(user_id))
            started = time.monotonic()
            print(f"published {args.entries} entries once; sampling every 5 s", flush=True)
            print(f"{'t (s)':>6} {'stored':>7} {'unfinished':>10} {'ratio':>6} {'bound':>6}")
            with psycopg.connect(libpq(db_url), autocommit=True) as conn:
                while time.monotonic() - started < args.seconds:
                    stored = stored_messages(client, namespace)
                    left = unfinished(conn)
                    bound = 1.1 * left + prefetch
                    ratio = stored / left if left else 0.0
                    worst = max(worst, ratio)
                    over += stored > bound
                    print(
                        f"{time.monotonic() - started:6.0f} {stored:7d} {left:10d} "
                        f"{ratio:6.2f} {bound:6.0f}",
                        flush=True,
                    )
                    if not left:
                        break
                    time.sleep(5)
                completed = conn.execute(
                    "SELECT count(*) FROM visualizations WHERE status = 'completed'"
                ).fetchone()
        finally:
            scheduler.terminate()
            scheduler.wait(timeout=30)
            workers.stop()
            broker.close()
            engine.dispose()
            server.shutdown()
    with state.lock:
        calls = [c for c in state.calls if c["accepted"]]
    per_entry: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    for call in calls:
        kinds[call["kind"]] += 1
        found = SITUATION.search(call["text"] or "")
        if call["kind"] == "image" and found:
            per_entry[found.group(1)] += 1
    twice = sum(1 for n in per_entry.values() if n > 1)
    done = int(completed[0]) if completed else 0
    print(
        f"\nworst stored/unfinished {worst:.2f} (bound 1.1 + prefetch {prefetch}); "
        f"samples over the bound: {over}"
    )
    print(
        f"accepted calls: image {kinds['image']}, analysis {kinds['analysis']}; "
        f"completed {done}; entries whose picture was paid for twice: {twice} "
        f"(of {len(per_entry)} identified by their prompt)"
    )
    return 1 if over or twice else 0


if __name__ == "__main__":
    sys.exit(main())
