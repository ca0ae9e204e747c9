"""Image quota benchmark (issue 14, deliverable 3): does our rate limiter fill the API's
per-minute image quota without 429s when two groups of workers share it? Prints figures
and ratios measured in one run; it asserts nothing. Target: quota used >= 95 % and 429
share <= 1 %; moonshot 98 % and 0.

Setup, per limiter (the exact Lua limiter, then Dramatiq's, in the same invocation):
the Gemini emulator with an image quota of Q calls per minute (an exact sliding 60 s
window of arrivals; a refused call answers 429 and is not counted), analysis latency 2 s,
image latency 8 s, no analysis quota. Two worker groups, each its own `dramatiq` process
group (as if on two machines), on the same Redis namespace with IMAGE_RPM = Q; each group
calls the emulator through its own listener (same state), so the emulator tells the
groups apart. A backlog of Q x (M + 1) entries keeps the quota saturated past the end.

Definitions (times are arrivals at the emulator):
  t0          the arrival of the first image call the emulator accepted;
  window      [t0, t0 + 60 s x M), M = --minutes (default 5; the 60 s quota window is
              not scaled);
  quota used  image calls accepted with arrival in the window / (Q x M). The emulator's
              window is exact, so any 60 s span holds at most Q accepted calls: 100 % is
              the ceiling, reached only if every slot is reused the moment it frees. The
              burst at the start is part of it (the first minute's calls are quota used);
              the tail is excluded by construction (the backlog outlasts the window and
              calls after t0 + 60 M are not counted). Startup before t0 (process start,
              the first analyses) is not counted against us.
  429 share   image calls answered 429 / all image calls, both arriving in the window.
  slack       min over the run's accepted image calls of (arrival - arrival of the
              accepted call Q places earlier - 60 s): how close the run came to a 429
              (the emulator refuses a call whose slack would be <= 0).
Also: acquire+release of one gate, exact vs Dramatiq's, single thread on the same Redis:
round trips, client CPU and wall time per call (--micro N; 0 skips it).

Usage: .venv/bin/python scripts/bench_quota.py [--minutes 5] [--quota 300]
       [--limiter both|exact|dramatiq] [--processes 2] [--threads 20] [--micro 2000]
Uses DATABASE_URL / REDIS_URL when set, else the embedded servers; works in a
throw-away database and Redis namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))

from common import (
    OUT,
    Workers,
    base_env,
    bench_database,
    entry_ids,
    make_entries,
    publish_raw,
    status_counts,
)

from workers import bootstrap
from workers.devtools.emulator import EmulatorServer, EmulatorState, start_in_thread
from workers.messaging import redis_keys
from workers.providers.ratelimit import DramatiqRateGate, RateGate
from workers.settings import get_settings

API_KEY = "bench-key"
GROUPS = ("group-a", "group-b")


@contextmanager
def emulator(quota: int, analysis_s: float, image_s: float) -> Iterator[list[EmulatorServer]]:
    """One emulator state behind two listeners, one per worker group."""
    state = EmulatorState(
        api_key=API_KEY,
        latency_analysis_s=analysis_s,
        latency_image_s=image_s,
        quota_image_per_minute=quota,
    )
    servers = [start_in_thread(state, label=label) for label in GROUPS]
    try:
        yield servers
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def stats(url: str, since: float, until: float) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_emulator/stats?since={since}&until={until}") as r:
        return dict(json.loads(r.read()))


def image_arrivals(state: EmulatorState) -> list[float]:
    """Arrival times of the accepted image calls (the emulator runs in this process)."""
    with state.lock:
        return sorted(c["at"] for c in state.calls if c["kind"] == "image" and c["accepted"])


def wait_for_heartbeats(env: dict[str, str], processes: int) -> None:
    client = redis.Redis.from_url(env["REDIS_URL"])
    deadline = time.monotonic() + 60
    while client.zcard(redis_keys.heartbeats(env["REDIS_NAMESPACE"])) < processes:
        if time.monotonic() > deadline:
            raise RuntimeError("the worker groups did not start")
        time.sleep(0.1)
    client.close()


def stop_now(groups: list[Workers]) -> None:
    """The window is over: what the workers do next does not count. A graceful stop
    would wait for threads queued at the full gate (up to RATE_LIMIT_WAIT_S)."""
    processes = [psutil.Process(g.proc.pid) for g in groups]
    processes += [child for p in processes for child in p.children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=10)
    for group in groups:
        group.stop()  # reaps the main process, removes the namespace's keys


def run_limiter(args: argparse.Namespace, db_url: str, limiter: str) -> dict[str, Any]:
    quota, minutes = args.quota, args.minutes
    make_entries(db_url, quota * (minutes + 1))
    ids = entry_ids(db_url)
    namespace = f"bench-quota-{limiter}-{uuid.uuid4().hex[:6]}"
    with emulator(quota, args.analysis_latency, args.image_latency) as servers:
        state = servers[0].state
        envs = [
            {
                **base_env(db_url, namespace),
                "PROVIDER": "gemini",
                "GEMINI_API_KEY": API_KEY,
                "GEMINI_BASE_URL": server.url,
                "IMAGE_RPM": str(quota),
                "RATE_LIMITER": limiter,
                "METRICS_PORT": "0",
            }
            for server in servers
        ]
        groups = [Workers(env, args.processes, args.threads, ["visualizations"]) for env in envs]
        try:
            wait_for_heartbeats(envs[0], args.processes * len(groups))
            publish_raw(
                envs[0]["REDIS_URL"],
                namespace,
                "visualizations",
                "entry.created",
                [{"version": 1, "entry_id": e, "user_id": u} for e, u in ids],
            )
            while not image_arrivals(state):
                time.sleep(0.05)
            t0 = image_arrivals(state)[0]
            end = t0 + 60 * minutes
            for minute in range(1, minutes + 1):
                time.sleep(max(0.0, t0 + 60 * minute - time.time()))
                so_far = stats(servers[0].url, t0 + 60 * (minute - 1), t0 + 60 * minute)
                image = so_far["kinds"].get("image", {})
                print(
                    f"    [{limiter}] minute {minute}: image accepted {image.get('accepted', 0)}"
                    f", 429 {image.get('rate_limited', 0)}",
                    flush=True,
                )
            time.sleep(max(0.0, end + 1 - time.time()))
        finally:
            stop_now(groups)
        figures = stats(servers[0].url, t0, end)
        arrivals = image_arrivals(state)
    pairs = zip(arrivals, arrivals[quota:], strict=False)
    slack = min(((b - a - 60, b - t0) for a, b in pairs), default=None)
    return {"limiter": limiter, "figures": figures, "slack": slack, "db": status_counts(db_url)}


def report(result: dict[str, Any], quota: int, minutes: int) -> tuple[float, float]:
    image = result["figures"]["kinds"].get("image", {})
    accepted, calls = image.get("accepted", 0), image.get("calls", 0)
    refused = image.get("rate_limited", 0)
    used = accepted / (quota * minutes)
    share = refused / calls if calls else 0.0
    slack = "n/a"
    if result["slack"] is not None:
        seconds, at = result["slack"]
        slack = f"{seconds * 1000:+.1f} ms (at t0 + {at:.1f} s)"
    print(
        f"  {result['limiter']:9s} quota used {accepted}/{quota * minutes} = {used * 100:6.2f} %"
        f"   429 share {refused}/{calls} = {share * 100:5.2f} %   slack {slack}"
    )
    for label, kinds in result["figures"]["listeners"].items():
        g = kinds.get("image", {})
        print(
            f"      {label}: image calls {g.get('calls', 0)}, accepted {g.get('accepted', 0)}"
            f", 429 {g.get('rate_limited', 0)}; analysis calls"
            f" {kinds.get('analysis', {}).get('calls', 0)}"
        )
    print(f"      rows after the run (stopped mid-backlog): {result['db']}")
    return used, share


class CountingConnection(redis.Connection):
    """Counts what is sent to Redis: one send is one round trip (a pipeline is one)."""

    sends = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sends += 1
        super().send_packed_command(command, check_health)


def micro(redis_url: str, count: int) -> None:
    print(f"\n  acquire+release of one gate, {count} calls, one thread, limits never reached:")
    pool = redis.ConnectionPool.from_url(redis_url, connection_class=CountingConnection)
    client = redis.Redis(connection_pool=pool)
    namespace = f"bench-quota-micro-{uuid.uuid4().hex[:6]}"
    figures: dict[str, tuple[float, float, float]] = {}
    for name, kind in (("dramatiq", DramatiqRateGate), ("exact", RateGate)):
        gate = kind(
            client,
            f"{namespace}:{name}",
            per_minute=10_000_000,
            max_concurrent=1000,
            max_wait_s=10,
            slot_ttl_ms=60_000,
        )
        for _ in range(50):  # warm up: connection, script cache
            with gate.slot():
                pass
        CountingConnection.sends = 0
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(count):
            with gate.slot():
                pass
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        figures[name] = (CountingConnection.sends / count, cpu / count * 1e6, wall / count * 1e6)
        print(
            f"    {name:9s} {figures[name][0]:5.1f} round trips  {figures[name][1]:7.1f} us CPU"
            f"  {figures[name][2]:7.1f} us wall  per call"
        )
    old, new = figures["dramatiq"], figures["exact"]
    print(
        f"    exact / dramatiq: round trips {new[0] / old[0]:.2f}, CPU {new[1] / old[1]:.2f}"
        f", wall {new[2] / old[2]:.2f}"
    )
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)
    client.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--quota", type=int, default=300, help="image calls per minute (Q)")
    parser.add_argument("--analysis-latency", type=float, default=2.0, metavar="S")
    parser.add_argument("--image-latency", type=float, default=8.0, metavar="S")
    parser.add_argument("--processes", type=int, default=2, help="per group")
    parser.add_argument("--threads", type=int, default=20, help="per process")
    parser.add_argument("--limiter", choices=["both", "exact", "dramatiq"], default="both")
    parser.add_argument("--micro", type=int, default=2000, help="acquire+release calls")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    margin = get_settings().rate_limit_margin_s
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}\n"
        f"image quota Q = {args.quota}/min, {args.minutes} min measured; latency analysis "
        f"{args.analysis_latency:g} s, image {args.image_latency:g} s; 2 groups x "
        f"{args.processes} processes x {args.threads} threads; exact limiter window "
        f"60 s + {margin:g} s margin (costs <= {margin / (60 + margin) * 100:.2f} % of the quota)"
    )
    if args.micro:
        micro(bootstrap.redis_url(get_settings()), args.micro)
    limiters = ["exact", "dramatiq"] if args.limiter == "both" else [args.limiter]
    results = []
    with bench_database() as db_url:
        for limiter in limiters:
            print(f"\n  running the {limiter} limiter ...", flush=True)
            results.append(run_limiter(args, db_url, limiter))
    print(f"\nimage quota, Q = {args.quota}/min over {args.minutes} min (target >= 95 %, <= 1 %)")
    measured = {r["limiter"]: report(r, args.quota, args.minutes) for r in results}
    if len(measured) == 2:
        (new_used, new_share), (old_used, old_share) = measured["exact"], measured["dramatiq"]
        print(
            f"  exact vs dramatiq: quota used {new_used * 100:.2f} % vs {old_used * 100:.2f} %"
            f" (ratio {new_used / old_used:.3f}); 429 share {new_share * 100:.2f} % vs"
            f" {old_share * 100:.2f} %"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
