"""Queue pause benchmark (issue 24.3). Prints figures measured in one run; it asserts
nothing.

1. What the pause check costs a fetch. The same messages drained in batches of 8
   (each round trip acks the previous batch and fetches the next) by
   - "before": the round trip as it was (Dramatiq's dispatch script in MULTI/EXEC
     after an LRANGE of the ids), rebuilt here from the same calls, and
   - "after": ``RedisCommands.ack_and_fetch`` (our fetch script, which reads the
     paused queues' mirror first).
   Per message: wall time of this client and the Redis server's CPU (INFO cpu).
2. How fast a pause holds and a resume drains. CONSUMERS consumers (the real
   AdmittingConsumer, as a worker's consumer threads run it) drain a queue a feeder
   keeps full; the mirror is written (what ``queue pause`` does after its commit) at
   t0; "pause latency" is the last time any consumer got a message after t0, minus
   t0. Then the resume (mirror rewritten and the wake-up sent, as ``queue resume``
   does): the first message any consumer gets, minus the resume. Target: both under
   1 s.

Usage: .venv/bin/python scripts/bench_pause.py [--messages 20000] [--rounds 5]
Needs REDIS_URL (default redis://127.0.0.1:6379/0); uses a throw-away namespace.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dramatiq
import redis

from domain.messages import MaintenanceReconcile
from workers.messaging.broker import build_broker
from workers.messaging.pauses import PauseMirror
from workers.messaging.redis_keys import RedisCommands, _round_trip, queue_keys
from workers.settings import Settings

QUEUE = "maintenance"
BATCH = 8
CONSUMERS = 4


def _broker(url: str) -> Any:
    namespace = f"bench-pause:{uuid.uuid4().hex[:8]}"
    settings = Settings(_env_file=None, redis_namespace=namespace)  # type: ignore[call-arg]
    broker: Any = build_broker(settings, url)

    @dramatiq.actor(actor_name=MaintenanceReconcile.actor_name, queue_name=QUEUE, broker=broker)
    def reconcile(*args: Any, **kwargs: Any) -> None:
        return None

    broker.reconcile = reconcile
    return broker


def _fill(broker: Any, count: int) -> None:
    for start in range(0, count, 1000):
        rows = []
        for _ in range(min(1000, count - start)):
            message = broker.reconcile.message().copy(
                options={"redis_message_id": str(uuid.uuid4())}
            )
            rows.append((QUEUE, message.options["redis_message_id"], message.encode()))
        broker.enqueue_rows(rows)


def _before(commands: RedisCommands, broker: Any, acks: list[str], count: int) -> list[Any]:
    """The round trip before the pause: acks, then MULTI / LRANGE / fetch / EXEC."""
    calls = [commands._dispatch("ack", redis_id) for redis_id in acks]
    ready = queue_keys(broker.namespace, QUEUE).ready
    calls += [
        ("MULTI",),
        ("LRANGE", ready, 0, count - 1),
        commands._dispatch("fetch", count),
        ("EXEC",),
    ]
    pool = broker.client.connection_pool
    conn = pool.get_connection()
    try:
        replies = _round_trip(conn, calls)
    finally:
        pool.release(conn)
    ids, bodies = replies[-1]
    return list(ids)[: len(bodies)]


def _server_cpu(client: redis.Redis) -> float:
    info: Any = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def fetch_cost(url: str, messages: int, rounds: int) -> None:
    results: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    for _ in range(rounds):
        for shape in ("before", "after"):
            broker = _broker(url)
            PauseMirror(broker.client, broker.namespace).write({})
            commands = RedisCommands(broker, QUEUE, strict_pauses=True)
            _fill(broker, messages)
            cpu0, wall0 = _server_cpu(broker.client), time.perf_counter()
            acks: list[str] = []
            taken = 0
            while taken < messages:
                if shape == "before":
                    ids = _before(commands, broker, acks, BATCH)
                else:
                    ids = commands.ack_and_fetch(acks, BATCH).keys or []
                acks = [i.decode() if isinstance(i, bytes) else i for i in ids]
                taken += len(ids)
            wall, cpu = time.perf_counter() - wall0, _server_cpu(broker.client) - cpu0
            results[shape].append((wall / messages * 1e6, cpu / messages * 1e6))
            _drop(broker)
    print(f"1. fetch cost, {messages} messages in batches of {BATCH}, median of {rounds} runs:")
    medians = {}
    for shape, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        medians[shape] = (wall, cpu)
        print(
            f"   {shape:6}  {wall:6.2f} us wall per message   {cpu:6.2f} us Redis CPU per message"
        )
    (wb, cb), (wa, ca) = medians["before"], medians["after"]
    print(f"   after / before: wall {wa / wb:.2f} x, Redis CPU {ca / cb:.2f} x")


def _one_round(url: str) -> tuple[float, float]:
    """(pause latency, resume latency) in seconds, for one queue kept full."""
    broker = _broker(url)
    mirror = PauseMirror(broker.client, broker.namespace)
    mirror.write({})
    broker.pause_source = lambda: None  # strict: the consumers hold to the mirror
    broker._pauses_restored = True
    stop = threading.Event()
    got: list[float] = []
    got_lock = threading.Lock()

    def consume() -> None:
        consumer = broker.consume(QUEUE, prefetch=BATCH, timeout=1000)
        while not stop.is_set():
            message = next(consumer)
            if message is not None:
                with got_lock:
                    got.append(time.monotonic())
                consumer.ack(message)
        consumer.close()

    def feed() -> None:
        while not stop.is_set():
            if broker.client.llen(queue_keys(broker.namespace, QUEUE).ready) < 500:
                _fill(broker, 500)
            time.sleep(0.005)

    threads = [threading.Thread(target=consume) for _ in range(CONSUMERS)]
    threads.append(threading.Thread(target=feed))
    for thread in threads:
        thread.start()
    while len(got) < 2000:  # flowing
        time.sleep(0.01)
    t0 = time.monotonic()
    mirror.write({QUEUE: "now"})
    time.sleep(1.5)  # the window watched: messages taken after t0, if any
    with got_lock:
        after = [t for t in got if t > t0]
        taken_before_resume = len(got)
    t1 = time.monotonic()
    mirror.write({})
    mirror.wake(QUEUE)
    while len(got) == taken_before_resume and time.monotonic() - t1 < 5:
        time.sleep(0.001)
    with got_lock:
        resumed = min(got[taken_before_resume:], default=t1 + 5)
    stop.set()
    for thread in threads:
        thread.join()
    _drop(broker)
    return (max(after) - t0 if after else 0.0), resumed - t1


def latency(url: str, rounds: int) -> None:
    measured = [_one_round(url) for _ in range(rounds)]
    pauses, resumes = [p for p, _ in measured], [r for _, r in measured]
    print(f"2. {CONSUMERS} consumers on a queue kept full, {rounds} rounds:")
    print(
        f"   pause: last message taken after it  median {statistics.median(pauses) * 1000:.1f} ms,"
        f" max {max(pauses) * 1000:.1f} ms (target < 1000 ms)"
    )
    print(
        f"   resume: first message taken after it median {statistics.median(resumes) * 1000:.1f} ms,"
        f" max {max(resumes) * 1000:.1f} ms (target < 1000 ms)"
    )


def _drop(broker: Any) -> None:
    keys = list(broker.client.scan_iter(match=f"{broker.namespace}*", count=1000))
    if keys:
        broker.client.delete(*keys)
    broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    fetch_cost(url, args.messages, args.rounds)
    latency(url, args.rounds)


if __name__ == "__main__":
    main()
