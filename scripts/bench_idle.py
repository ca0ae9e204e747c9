"""Idle latency benchmark (issue 14, deliverable 4). Prints figures measured in one run;
it asserts nothing.

Real worker processes (as `emotionviz worker` runs them: Dramatiq's CLI, every queue,
WORKER_PROCESSES x WORKER_THREADS by default) are left quiet for QUIET seconds; then
one message per queue is published through the real producer path
(``Producer.publish_many``, what ``uow.publish`` calls after commit), one queue after
the other (never overlapping; the queue that goes first rotates each round), and for
each we measure

  latency   = completed (the worker's log line after its commit, stamped by the
              worker) - published (this process, just before the publish call),
  provider  = the model time the worker measured for it: ``provider_ms`` of its
              "intake turn decided" line (intake), the growth of
              emotionviz_provider_request_seconds around the SDK calls (visualizations),
              none (analytics, maintenance),
  overhead  = latency - provider.

Completion: visualizations "visualization completed" (the row completed, analytics
refreshed), intake "intake step processed" (question stored, NOTIFY sent), analytics
"analytics recomputed", maintenance "reconciled". Provider: gemini (google-genai SDK)
against the emulator at 0 s latency. Each cold message is followed at once by a
"warm" one of the same queue (the same path with every consumer awake), so that what a
quiet spell costs shows as cold - warm.

Idle CPU: each worker process's CPU time (psutil, user + system) over the quiet
period, after its first 5 s (the consumers' backoff reaching its ceiling), as % of
one core; and the Redis server's (INFO cpu: the whole server).

Two configurations, in this one run: "before" (no wake-ups: consumers sleep Dramatiq's
backoff, the intake queue polled every 10 ms as INTAKE_IDLE_POLL_MS=10 did) and "after"
(wake-ups, INTAKE_IDLE_POLL_MS at its default). Last, what the wake-up adds to a
publish: the same publishes with it on and off, the workers subscribed.

Target: p95 overhead <= 50 ms on every queue (moonshot 10 ms), no busy polling.

Usage: .venv/bin/python scripts/bench_idle.py [--quiet-s 30] [--rounds 20]
       [--before-rounds 3] [--only before|after]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "bench"))
# This checkout's code, not the one the virtualenv has installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dramatiq
import psycopg
import redis
from common import OUT, Emulator, base_env, bench_database, cpu_seconds, libpq
from idle_parts import (
    CostProbe,
    LogTail,
    WorkerGroup,
    free_port,
    percentile,
    provider_seconds,
    redis_cpu_seconds,
    stamp,
)

from domain.messages import (
    QUEUES,
    AnalyticsRecompute,
    EntryCreated,
    IntakeStep,
    MaintenanceReconcile,
    MessageV1,
)
from workers.messaging.broker import SafeRedisBroker, build_broker
from workers.messaging.producer import Producer, envelope
from workers.messaging.redis_keys import queue_keys
from workers.settings import Settings

DONE = {
    "visualizations": "visualization completed",
    "intake": "intake step processed",
    "analytics": "analytics recomputed",
    "maintenance": "reconciled",
}
CPU_SETTLE_S = 5.0  # the consumers' backoff reaches its 1 s ceiling within ~2.5 s
GAP_S = 1.0  # between one queue's messages and the next queue's
# Warm-up messages per queue and worker process. Which process takes a message is a race,
# and a process's first message pays its first-ever costs (lazy imports, the SDK's
# pydantic schemas: ~70 ms); one warm-up message per queue left one process cold, and
# its first sample showed that instead of a quiet spell. Four per process leave a
# process without one in 2 x 0.5^8 of runs.
WARM_UP_PER_PROCESS = 4
COST_MESSAGES = 1000


@dataclass
class Sample:
    latency_ms: float
    provider_ms: float

    @property
    def overhead_ms(self) -> float:
        return self.latency_ms - self.provider_ms


@dataclass
class Result:
    cold: dict[str, list[Sample]] = field(default_factory=lambda: {q: [] for q in QUEUES})
    warm: dict[str, list[Sample]] = field(default_factory=lambda: {q: [] for q in QUEUES})
    worker_cpu: list[float] = field(default_factory=list)  # % of a core, per process
    other_cpu: list[float] = field(default_factory=list)  # parent + metrics server
    redis_cpu: list[float] = field(default_factory=list)
    cost_us: dict[str, list[float]] = field(default_factory=dict)


class Messages:
    """Fresh work for each sample, written just before it is published (as the API
    commits, then publishes): prepared rows would be found and published by the
    reconciler (the maintenance samples) before their turn."""

    def __init__(self, db_url: str) -> None:
        self.conn = psycopg.connect(libpq(db_url), autocommit=True)
        self.user = self._returning(
            "INSERT INTO users (email, hashed_password, name) VALUES (%s, 'x', 'Idle') "
            "RETURNING id",
            ("idle@example.com",),
        )
        self.day = date.today()  # the entries' day (created_at defaults to now)
        self.number = 0

    def next(self, queue: str) -> MessageV1:
        self.number += 1
        if queue == "visualizations":
            entry = self._returning(
                "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
                "VALUES (%s, %s, ARRAY['joy', 'anxiety'], 0.6) RETURNING id",
                (self.user, f"Benchmark situation {self.number}: a quiet afternoon"),
            )
            return EntryCreated.model_validate({"entry_id": entry, "user_id": self.user})
        if queue == "intake":
            session = self._returning(
                "INSERT INTO intake_sessions (user_id, initial_situation) VALUES (%s, %s) "
                "RETURNING id",
                (self.user, f"I was nervous before my exam and angry at myself, {self.number}"),
            )
            return IntakeStep.model_validate(
                {"session_id": session, "user_id": self.user, "step": 1}
            )
        if queue == "analytics":
            return AnalyticsRecompute.model_validate(
                {"period": "day", "period_start": self.day, "user_ids": [self.user]}
            )
        return MaintenanceReconcile()

    def _returning(self, sql: str, params: tuple[object, ...]) -> str:
        row = self.conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return str(row[0])

    def close(self) -> None:
        self.conn.close()


class Run:
    def __init__(
        self, mode: str, db_url: str, emulator: Emulator, messages: Messages, processes: int,
        threads: int,
    ) -> None:  # fmt: skip
        self.mode, self.messages, self.processes = mode, messages, processes
        namespace = f"bench-idle-{mode}-{os.getpid()}"
        self.metrics_dir = OUT / f"idle-metrics-{mode}"
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        env = {
            **base_env(db_url, namespace),
            "LOG_LEVEL": "INFO",
            "PROVIDER": "gemini",
            "GEMINI_API_KEY": "bench-key",
            "GEMINI_BASE_URL": emulator.url,
            "METRICS_PORT": str(free_port()),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
        }
        env.pop("INTAKE_IDLE_POLL_MS", None)
        modules: list[str] = []
        if mode == "before":
            env["INTAKE_IDLE_POLL_MS"] = "10"
            modules.append("idle_no_wake")
        self.workers = WorkerGroup(env, processes, threads, QUEUES, modules)
        self.log = LogTail(self.workers.log_path)
        settings = Settings(_env_file=None, redis_namespace=namespace)  # type: ignore[call-arg]
        self.broker = build_broker(settings, env["REDIS_URL"])
        assert isinstance(self.broker, SafeRedisBroker)
        self.broker.wake_ups_enabled = mode == "after"
        self.producer = Producer(self.broker)
        self.redis = redis.Redis.from_url(env["REDIS_URL"])

    def sample(self, queue: str) -> Sample:
        message = self.messages.next(queue)
        provider_before = provider_seconds(self.metrics_dir) if queue == "visualizations" else 0
        published = time.time()
        [message_id] = self.producer.publish_many([message])
        done = self.log.wait_for(message_id, DONE[queue])
        latency_ms = (stamp(done) - published) * 1000
        provider_ms = 0.0
        if queue == "intake":
            turn = self.log.wait_for(message_id, "intake turn decided")
            provider_ms = float(turn["provider_ms"])
        elif queue == "visualizations":
            provider_ms = (provider_seconds(self.metrics_dir) - provider_before) * 1000
        return Sample(latency_ms, provider_ms)

    def quiet(self, seconds: float, result: Result) -> None:
        """Sleep ``seconds``, measuring CPU after the first CPU_SETTLE_S."""
        settle = min(CPU_SETTLE_S, seconds / 2)
        time.sleep(settle)
        kinds = self.workers.processes_by_kind()
        started = time.monotonic()
        workers = [cpu_seconds([p]) for p in kinds["worker"]]
        other, server = cpu_seconds(kinds["other"]), redis_cpu_seconds(self.redis)
        time.sleep(seconds - settle)
        wall = time.monotonic() - started
        for proc, before in zip(kinds["worker"], workers, strict=True):
            result.worker_cpu.append((cpu_seconds([proc]) - before) / wall * 100)
        result.other_cpu.append((cpu_seconds(kinds["other"]) - other) / wall * 100)
        result.redis_cpu.append((redis_cpu_seconds(self.redis) - server) / wall * 100)

    def rounds(self, count: int, quiet_s: float, result: Result) -> None:
        for queue in QUEUES:  # warm-up: first-ever calls are not what a quiet spell costs
            for _ in range(WARM_UP_PER_PROCESS * self.processes):
                self.sample(queue)
        for number in range(count):
            self.quiet(quiet_s, result)
            order = QUEUES[number % len(QUEUES) :] + QUEUES[: number % len(QUEUES)]
            for queue in order:
                result.cold[queue].append(self.sample(queue))
                result.warm[queue].append(self.sample(queue))
                time.sleep(GAP_S)
            print(f"  {self.mode}: round {number + 1}/{count} done", flush=True)

    def enqueue_cost(self, result: Result) -> None:
        """Microseconds per publish, wake-up on and off, in alternating blocks: onto an
        empty queue (emptied, untimed, before each: every one is announced, the idle
        case) and onto a queue holding messages (never announced, the busy case)."""
        probe = CostProbe()
        ready = queue_keys(self.broker.namespace, probe.queue_name).ready

        def enqueue() -> None:
            self.broker.enqueue(envelope(probe))

        def publish_many() -> None:
            self.producer.publish_many([probe])

        paths: dict[str, Callable[[], None]] = {
            "broker.enqueue": enqueue,
            "publish_many": publish_many,
        }
        for _ in range(4):
            for empty in (True, False):
                for name, call in paths.items():
                    for wake in (False, True):
                        self.broker.wake_ups_enabled = wake
                        key = f"{name} {'empty' if empty else 'busy'} {'on' if wake else 'off'}"
                        times = result.cost_us.setdefault(key, [])
                        for _ in range(COST_MESSAGES // 4):
                            if empty:
                                self.redis.delete(ready)
                            started = time.perf_counter_ns()
                            call()
                            times.append((time.perf_counter_ns() - started) / 1000)
        self.broker.wake_ups_enabled = self.mode == "after"

    def stop(self) -> None:
        self.broker.close()
        self.redis.close()
        self.workers.stop()


def write_samples(results: dict[str, Result]) -> Path:
    detail = OUT / "idle-samples.tsv"
    with detail.open("w") as out:  # every sample, in the order taken per queue
        out.write("config\tqueue\tkind\tlatency_ms\tprovider_ms\toverhead_ms\n")
        for mode, result in results.items():
            for kind, samples in (("cold", result.cold), ("warm", result.warm)):
                for queue, taken in samples.items():
                    for s in taken:
                        out.write(
                            f"{mode}\t{queue}\t{kind}\t{s.latency_ms:.1f}\t{s.provider_ms:.1f}"
                            f"\t{s.overhead_ms:.1f}\n"
                        )
    return detail


def report(results: dict[str, Result], args: argparse.Namespace) -> None:
    print(
        f"\npublish -> completed, minus provider time (ms); one message per queue after "
        f"{args.quiet_s:g} s of quiet ('cold'), then one at once ('warm')"
    )
    print(
        f"{'config':7s} {'queue':15s} {'n':>2s} {'p50':>7s} {'p95':>7s} {'max':>7s}"
        f" {'latency p50':>12s} {'provider p50':>13s} {'warm p50':>9s} {'warm provider':>14s}"
        "  target p95<=50"
    )
    for mode, result in results.items():
        for queue in QUEUES:
            cold, warm = result.cold[queue], result.warm[queue]
            if not cold:
                continue
            over = [s.overhead_ms for s in cold]
            p95 = percentile(over, 0.95)
            verdict = "met" if p95 <= 50 else "NOT met"
            if p95 <= 10:
                verdict += " (moonshot 10 too)"
            print(
                f"{mode:7s} {queue:15s} {len(over):2d} {percentile(over, 0.5):7.1f} {p95:7.1f}"
                f" {max(over):7.1f} {percentile([s.latency_ms for s in cold], 0.5):12.1f}"
                f" {percentile([s.provider_ms for s in cold], 0.5):13.1f}"
                f" {percentile([s.overhead_ms for s in warm], 0.5):9.1f}"
                f" {percentile([s.provider_ms for s in warm], 0.5):14.1f}  {verdict}"
            )
    print("\nidle CPU, % of one core, mean over the quiet periods (after their first 5 s)")
    for mode, result in results.items():
        if result.worker_cpu:
            print(
                f"{mode:7s} per worker process {statistics.fmean(result.worker_cpu):5.2f}"
                f" (max {max(result.worker_cpu):.2f});  Dramatiq's parent + metrics server"
                f" {statistics.fmean(result.other_cpu):5.2f};  Redis server (all of it)"
                f" {statistics.fmean(result.redis_cpu):5.2f}"
            )
    if "before" in results and "after" in results and results["after"].worker_cpu:
        before = statistics.fmean(results["before"].worker_cpu)
        after = statistics.fmean(results["after"].worker_cpu)
        print(f"per worker process, before / after: {before / after:.1f}x")
        for queue in QUEUES:
            b = [s.overhead_ms for s in results["before"].cold[queue]]
            a = [s.overhead_ms for s in results["after"].cold[queue]]
            if a and b:
                print(
                    f"  {queue:15s} p50 overhead before / after: "
                    f"{percentile(b, 0.5) / max(percentile(a, 0.5), 0.1):.0f}x"
                )
    for result in results.values():
        if not result.cost_us:
            continue
        print(
            f"\nwhat a publish costs (us; {COST_MESSAGES} each, on/off alternating; the "
            "workers subscribed): off = Dramatiq's enqueue / the old pipeline, on = announced"
        )
        for name in ("broker.enqueue", "publish_many"):
            for case, label in (
                ("empty", "onto an empty queue (PUBLISH)"),
                ("busy", "onto a busy queue"),
            ):
                off = result.cost_us[f"{name} {case} off"]
                on = result.cost_us[f"{name} {case} on"]
                print(
                    f"  {name:15s} {label:30s} off p50 {statistics.median(off):5.0f} mean"
                    f" {statistics.fmean(off):5.0f};  on p50 {statistics.median(on):5.0f} mean"
                    f" {statistics.fmean(on):5.0f};  on/off p50 "
                    f"{statistics.median(on) / statistics.median(off):.2f}"
                )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    parser.add_argument("--quiet-s", type=float, default=30.0)
    # 20: a p95 of 6 samples is their maximum, one slow sample decides it.
    parser.add_argument("--rounds", type=int, default=20, help="quiet periods, after")
    parser.add_argument("--before-rounds", type=int, default=3, help="quiet periods, before")
    parser.add_argument("--processes", type=int, default=settings.worker_processes)
    parser.add_argument("--threads", type=int, default=settings.worker_threads)
    parser.add_argument("--only", choices=["before", "after"])
    args = parser.parse_args()
    started = time.monotonic()
    OUT.mkdir(exist_ok=True)
    print(
        f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; dramatiq "
        f"{dramatiq.__version__}; {args.processes} worker processes x {args.threads} threads "
        "on every queue; gemini provider -> emulator at 0 s latency"
    )
    modes = [m for m in ("before", "after") if args.only in (None, m)]
    rounds = {"before": args.before_rounds, "after": args.rounds}
    results: dict[str, Result] = {}
    with bench_database() as db_url:
        messages = Messages(db_url)
        emulator = Emulator(0.0, 0.0)
        try:
            for mode in modes:
                run = Run(mode, db_url, emulator, messages, args.processes, args.threads)
                result = results[mode] = Result()
                try:
                    run.rounds(rounds[mode], args.quiet_s, result)
                    if mode == "after":
                        run.enqueue_cost(result)
                finally:
                    run.stop()
        finally:
            emulator.stop()
            messages.close()
    report(results, args)
    print(f"\nevery sample: {write_samples(results)}; run time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
