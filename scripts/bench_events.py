"""Completion events latency benchmark (issue 23, item 1). Prints figures measured in
one run; it asserts nothing.

Real worker processes (WORKER_PROCESSES x their dispatcher thread, as `emotionviz
worker` runs them) deliver to a local webhook receiver that verifies every signature
(workers/devtools/webhook_receiver.py). This process writes COUNT transitions into
``completed``, at RATE per second, each a single-statement commit as the workers'
completion is, and measures from the moment the commit was sent:

  notify   = the ``visualization_done`` notification received by a LISTENer (the API's
             view), on a connection of its own;
  webhook  = the signed request received by the receiver (the dispatcher woken by that
             NOTIFY: claim, POST, record).

Target: notify p95 <= 50 ms. The workers run no jobs here (the transitions are
written directly), so the figures are the events' own cost, not the pipeline's.

Usage: .venv/bin/python scripts/bench_events.py [--count 500] [--rate 100]
       [--processes 2]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import psycopg
from common import OUT, Workers, base_env, bench_database, libpq

from workers.devtools.webhook_receiver import WebhookReceiver, serve


def _percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    ms = sorted(v * 1000 for v in values)
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return f"p50 {q[49]:.1f} ms  p95 {q[94]:.1f} ms  p99 {q[98]:.1f} ms  max {ms[-1]:.1f} ms"


def _prepare(db_url: str, count: int) -> list[str]:
    """COUNT entries with a visualization row in ``processing`` (as a claim leaves it)."""
    with psycopg.connect(libpq(db_url), autocommit=True) as conn:
        user = conn.execute(
            "INSERT INTO users (email, hashed_password, name) "
            "VALUES ('bench-events@example.com', 'x', 'Bench') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        conn.execute(
            "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
            "SELECT %s, 'Benchmark situation ' || g, ARRAY['joy'], 0.5 "
            "FROM generate_series(1, %s) g",
            (user, count),
        )
        rows = conn.execute(
            "INSERT INTO visualizations (entry_id, user_id, status, processing_started_at) "
            "SELECT id, user_id, 'processing', now() FROM emotion_entries RETURNING id"
        ).fetchall()
    return [str(r[0]) for r in rows]


class NotifyClock:
    """When each visualization_done notification arrived, by visualization id."""

    def __init__(self, db_url: str) -> None:
        self.conn = psycopg.connect(libpq(db_url), autocommit=True)
        self.conn.execute("LISTEN visualization_done")
        self.at: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for note in self.conn.notifies(timeout=0.2):
                now = time.perf_counter()
                self.at[json.loads(note.payload)["visualization_id"]] = now

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="transitions per second")
    parser.add_argument("--processes", type=int, default=2, help="worker processes")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)

    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    receiver = WebhookReceiver(secret)
    server = serve(receiver)
    # The receiver stamps time.time(); the commits are stamped on the same clock.
    with bench_database() as db_url:
        ids = _prepare(db_url, args.count)
        env = {
            **base_env(db_url, f"bench-events-{uuid.uuid4().hex[:6]}"),
            "EVENTS_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hooks",
            "EVENTS_WEBHOOK_SECRET": secret,
            "METRICS_PORT": "0",
        }
        workers = Workers(env, args.processes, 1, ["maintenance"], modules=(), log_prefix="events")
        clock = NotifyClock(db_url)
        sent_wall: dict[str, float] = {}
        sent_perf: dict[str, float] = {}
        try:
            with psycopg.connect(libpq(db_url), autocommit=True) as conn:
                started = time.perf_counter()
                for i, viz in enumerate(ids):
                    due = started + i / args.rate
                    pause = due - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
                    sent_wall[viz] = time.time()
                    sent_perf[viz] = time.perf_counter()
                    conn.execute(
                        "UPDATE visualizations SET status = 'completed', "
                        "processing_completed_at = now() WHERE id = %s",
                        (viz,),
                    )
            receiver.wait_until(lambda r: len(r.accepted()) >= len(ids), timeout=60)
            time.sleep(0.5)
        finally:
            clock.close()
            workers.stop()
            server.shutdown()
            server.server_close()

    got = {r.body["data"]["visualization_id"]: r.at for r in receiver.accepted()}
    notify = [clock.at[v] - sent_perf[v] for v in ids if v in clock.at]
    webhook = [got[v] - sent_wall[v] for v in ids if v in got]
    duplicates = len(receiver.accepted()) - len(got)
    print(
        f"completion events: {args.count} transitions at {args.rate:.0f}/s, "
        f"{args.processes} worker processes (one dispatcher each)"
    )
    print(f"  commit -> NOTIFY received:  {_percentiles(notify)}  ({len(notify)} of {len(ids)})")
    print(f"  commit -> webhook received: {_percentiles(webhook)}  ({len(webhook)} of {len(ids)})")
    print(
        f"  webhook: {len(got)} events, {duplicates} duplicates, "
        f"{len(receiver.rejected)} bad signatures"
    )


if __name__ == "__main__":
    main()
