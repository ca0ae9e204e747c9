"""Intake latency benchmark (issue: dynamic intake). Prints figures measured in one run;
it asserts nothing.

SESSIONS conversations are in flight at once, as people would hold them: each session
starts at a random moment in the first two seconds; when its question is announced
(LISTEN on the intake channel), the simulated person "thinks" for THINK seconds
(uniform), stores the answer (as the API does: jsonb update, commit) and publishes
intake.step. For every step we measure

  latency   = NOTIFY received - intake.step published (in this process),
  provider  = the provider's own time for that step (``provider_ms`` in the worker's
              log line, around the model call),
  overhead  = latency - provider: queueing, broker, both transactions, NOTIFY.

Target: p95 overhead <= 50 ms. Run with the local provider and with the gemini provider
(google-genai SDK) against the emulator at ANALYSIS_LATENCY seconds. Intake workers as
docker-compose runs them: their own processes, on the intake queue only.

Usage: .venv/bin/python scripts/bench_intake.py [--sessions 200] [--steps 3]
       [--think 1.0 3.0] [--analysis-latency 0.5] [--only local|emulator]
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

import psycopg
from common import OUT, Emulator, Workers, base_env, bench_database, libpq, publish_raw

from domain.intake import NOTIFY_CHANNEL

PROCESSES, THREADS = 2, 64

ANSWER_SQL = """
UPDATE intake_sessions
SET conversation_history = jsonb_set(
        conversation_history,
        ARRAY[(jsonb_array_length(conversation_history) - 1)::text],
        conversation_history -> -1
            || jsonb_build_object('answer', %(answer)s::text, 'answered_at', now()))
WHERE id = %(id)s
"""


@dataclass
class Run:
    published: dict[tuple[str, int], float] = field(default_factory=dict)
    notified: dict[tuple[str, int], float] = field(default_factory=dict)


def make_sessions(db_url: str, count: int) -> list[tuple[str, str]]:
    with psycopg.connect(libpq(db_url), autocommit=True) as conn:
        conn.execute("TRUNCATE users CASCADE")
        conn.execute(
            "INSERT INTO users (email, hashed_password, name) SELECT 'p' || g || "
            "'@example.com', 'x', 'P' FROM generate_series(1, %s) g",
            (max(1, count // 4),),
        )
        rows = conn.execute(
            "INSERT INTO intake_sessions (user_id, initial_situation) "
            "SELECT (SELECT id FROM users OFFSET g %% (SELECT count(*) FROM users) LIMIT 1), "
            "'I was nervous before my exam and a bit angry at myself, run ' || g "
            "FROM generate_series(1, %s) g RETURNING id, user_id",
            (count,),
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def converse(
    db_url: str, env: dict[str, str], sessions: list[tuple[str, str]], args: argparse.Namespace
) -> Run:
    """Drive every conversation: publish, wait for the NOTIFY, think, answer, publish."""
    run = Run()
    owner = dict(sessions)
    due: list[tuple[float, str, int]] = []  # (when, session, step to publish)
    start = time.perf_counter()
    for session_id, _ in sessions:
        heapq.heappush(due, (start + random.uniform(0, 2), session_id, 1))
    expected = len(sessions) * args.steps
    with (
        psycopg.connect(libpq(db_url), autocommit=True) as listener,
        psycopg.connect(libpq(db_url), autocommit=True) as writer,
    ):
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        deadline = time.perf_counter() + 600
        while len(run.notified) < expected and time.perf_counter() < deadline:
            now = time.perf_counter()
            while due and due[0][0] <= now:
                _, session_id, step = heapq.heappop(due)
                if step > 1:
                    writer.execute(ANSWER_SQL, {"answer": f"answer {step - 1}", "id": session_id})
                payload = {"session_id": session_id, "user_id": owner[session_id], "step": step}
                publish_raw(
                    env["REDIS_URL"], env["REDIS_NAMESPACE"], "intake", "intake.step", [payload]
                )
                run.published[(session_id, step)] = time.perf_counter()
            wait = max(0.0, min(0.05, due[0][0] - time.perf_counter())) if due else 0.05
            for notice in listener.notifies(timeout=wait):
                received = time.perf_counter()
                data = json.loads(notice.payload)
                key = (data["session_id"], int(data["step"]))
                run.notified.setdefault(key, received)
                if key[1] < args.steps:
                    think = random.uniform(*args.think)
                    heapq.heappush(due, (received + think, key[0], key[1] + 1))
                if len(run.notified) >= expected:
                    break
    return run


def provider_ms(log_path: str) -> dict[tuple[str, int], float]:
    """provider_ms per (session, step) from the workers' JSON log lines (two processes
    share the file, so a line may hold more than one record)."""
    found: dict[tuple[str, int], float] = {}
    decoder = json.JSONDecoder()
    with open(log_path, errors="replace") as log:
        for line in log:
            position = 0
            while (start := line.find("{", position)) >= 0:
                try:
                    record, position = decoder.raw_decode(line, start)
                except json.JSONDecodeError:
                    break
                if record.get("event") == "intake turn decided":
                    key = (record["session_id"], int(record["step"]))
                    found[key] = float(record["provider_ms"])
    return found


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, run: Run, provider: dict[tuple[str, int], float]) -> None:
    keys = [k for k in run.notified if k in run.published and k in provider]
    latency = [(run.notified[k] - run.published[k]) * 1000 for k in keys]
    own = [provider[k] for k in keys]
    overhead = [lat - p for lat, p in zip(latency, own, strict=True)]
    detail = OUT / f"intake-{label.split()[0]}.tsv"
    with detail.open("w") as out:  # per step, in publish order, for a closer look
        out.write("session\tstep\tpublished_s\tlatency_ms\tprovider_ms\n")
        first = min(run.published.values())
        for k in sorted(keys, key=run.published.__getitem__):
            out.write(
                f"{k[0]}\t{k[1]}\t{run.published[k] - first:.3f}\t"
                f"{(run.notified[k] - run.published[k]) * 1000:.1f}\t{provider[k]:.1f}\n"
            )
    print(f"\n{label}: {len(keys)} steps measured of {len(run.published)} published")
    for name, values in (("latency", latency), ("provider", own), ("overhead", overhead)):
        print(
            f"  {name:9s} ms  p50 {_pct(values, 0.50):7.1f}   p95 {_pct(values, 0.95):7.1f}"
            f"   p99 {_pct(values, 0.99):7.1f}   mean {statistics.fmean(values):7.1f}"
        )
    p95 = _pct(overhead, 0.95)
    print(
        f"  p95 overhead {p95:.1f} ms against the target 50 ms: {'met' if p95 <= 50 else 'NOT met'}"
    )


def bench(db_url: str, args: argparse.Namespace, provider: str) -> None:
    sessions = make_sessions(db_url, args.sessions)
    env = {
        **base_env(db_url, f"bench-intake-{provider}-{os.getpid()}"),
        "LOG_LEVEL": "INFO",
        "INTAKE_MAX_STEPS": str(args.steps + 1),
    }
    emulator = None
    if provider == "emulator":
        emulator = Emulator(args.analysis_latency, 0.0)
        env.update(
            {"PROVIDER": "gemini", "GEMINI_API_KEY": "bench-key", "GEMINI_BASE_URL": emulator.url}
        )
    else:
        env["PROVIDER"] = "local"
    workers = Workers(env, PROCESSES, THREADS, ["intake"])
    try:
        run = converse(db_url, env, sessions, args)
    finally:
        workers.stop()
        if emulator is not None:
            emulator.stop()
    label = (
        f"{provider} provider"
        + (f" (emulator latency {args.analysis_latency:g} s)" if emulator else "")
        + f", {args.sessions} sessions in flight x {args.steps} steps, think "
        f"{args.think[0]:g}-{args.think[1]:g} s, {PROCESSES} x {THREADS} intake workers"
    )
    report(label, run, provider_ms(workers.log.name))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--think", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"))
    parser.add_argument("--analysis-latency", type=float, default=0.5)
    parser.add_argument("--only", choices=["local", "emulator"])
    args = parser.parse_args()
    random.seed(7)
    OUT.mkdir(exist_ok=True)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    with bench_database() as db_url:
        for provider in ("local", "emulator"):
            if args.only in (None, provider):
                bench(db_url, args, provider)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
