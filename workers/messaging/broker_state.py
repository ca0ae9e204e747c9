"""What the broker holds right now, read from Dramatiq's Redis keys: per queue the
messages ready, delayed (waiting out a delay or a retry backoff, in Redis or already
in a worker's memory), in flight, retrying and dead, the age of the oldest ready
message; and the worker processes alive with what each holds.

Dramatiq moves delayed messages into worker memory as soon as a worker fetches them,
so the delay queue's length alone reads about 0 while workers run; the acks sets of
live workers show them. Used by ``status``, ``job``, the metrics and the console.
Every read is O(queues + workers) round trips in one pipeline, plus at most
``BODY_SAMPLE`` message bodies for the retrying count.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import redis

from domain.messages import QUEUES
from workers.messaging.redis_keys import (
    DELAY_SUFFIX,
    acks_pattern,
    canonical_queue,
    heartbeats,
    queue_keys,
)

# Dramatiq's default heartbeat timeout, which our broker uses: a worker silent for
# longer is dead and its messages go back to the queue.
HEARTBEAT_TIMEOUT_MS = 60_000
BODY_SAMPLE = 500


@dataclass
class QueueState:
    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    retrying: int = 0
    dead: int = 0
    oldest_age_s: float | None = None  # of the oldest ready message
    consumers: int | None = None  # RabbitMQ only (Redis: see the workers' holdings)

    def as_dict(self, not_measured: tuple[str, ...] = ()) -> dict[str, float | int | None]:
        values: dict[str, float | int | None] = {
            "ready": self.ready,
            "delayed": self.delayed,
            "in_flight": self.in_flight,
            "retrying": self.retrying,
            "dead": self.dead,
            "oldest_age_s": self.oldest_age_s,
        }
        if self.consumers is not None:
            values["consumers"] = self.consumers
        return {k: None if k in not_measured else v for k, v in values.items()}


@dataclass
class WorkerState:
    worker_id: str
    last_heartbeat_s_ago: float
    holding: dict[str, int] = field(default_factory=dict)  # queue -> messages held

    def as_dict(self) -> dict[str, object]:
        return {
            "worker_id": self.worker_id,
            "last_heartbeat_s_ago": round(self.last_heartbeat_s_ago, 1),
            "holding": self.holding,
        }


@dataclass
class BrokerState:
    queues: dict[str, QueueState]
    workers: list[WorkerState]
    broker: str = "redis"
    # Fields this broker cannot tell (workers/messaging/rabbitmq_state.py): None in
    # as_dict, "n/a" in status, left out of the metrics; "workers" when it has no
    # heartbeats to list workers by.
    not_measured: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        values: dict[str, object] = {
            "queues": {name: q.as_dict(self.not_measured) for name, q in self.queues.items()},
            "workers": [w.as_dict() for w in self.workers],
        }
        if self.broker != "redis":
            values["broker"] = self.broker
            values["not_measured"] = list(self.not_measured)
        return values


def _timestamp_ms(body: bytes | None) -> int | None:
    if not body:
        return None
    try:
        value = json.loads(body).get("message_timestamp")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def _is_retry(body: bytes | None) -> bool:
    if not body:
        return False
    try:
        options = json.loads(body).get("options")
    except (ValueError, AttributeError):
        return False
    return isinstance(options, dict) and int(options.get("retries") or 0) > 0


def read_broker_state(
    client: redis.Redis, namespace: str, queues: tuple[str, ...] = QUEUES
) -> BrokerState:
    now_ms = time.time() * 1000
    beats: list[tuple[bytes, float]] = client.zrange(  # type: ignore[assignment]
        heartbeats(namespace), 0, -1, withscores=True
    )
    alive = {
        member.decode(): now_ms - score
        for member, score in beats
        if now_ms - score < HEARTBEAT_TIMEOUT_MS
    }
    states = {queue: QueueState() for queue in queues}
    workers = {wid: WorkerState(wid, age / 1000) for wid, age in alive.items()}

    # Acks sets of live workers: what each holds, per queue (delay queues included).
    prefix = acks_pattern(namespace)[:-1]
    ack_keys = [key.decode() for key in client.scan_iter(match=acks_pattern(namespace), count=1000)]
    held: list[tuple[str, str, str]] = []  # (worker, consumed queue, key)
    for key in ack_keys:
        worker_and_queue = key[len(prefix) :]
        worker_id, _, consumed = worker_and_queue.partition(".")
        if worker_id in alive and canonical_queue(consumed) in states:
            held.append((worker_id, consumed, key))

    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            keys = queue_keys(namespace, queue)
            pipe.llen(keys.ready)
            pipe.llen(keys.delayed)
            pipe.zcard(keys.dead)
            pipe.lindex(keys.ready, 0)
        for _, _, key in held:
            pipe.smembers(key)
        results = pipe.execute()

    oldest_ids: dict[str, bytes] = {}
    for i, queue in enumerate(queues):
        ready, delayed, dead, head = results[i * 4 : i * 4 + 4]
        state = states[queue]
        state.ready, state.delayed, state.dead = int(ready), int(delayed), int(dead)
        if head is not None:
            oldest_ids[queue] = head
    delayed_ids: dict[str, list[bytes]] = {}
    for (worker_id, consumed, _), members in zip(held, results[len(queues) * 4 :], strict=True):
        queue = canonical_queue(consumed)
        count = len(members)
        workers[worker_id].holding[consumed] = count
        if consumed.endswith(DELAY_SUFFIX):
            states[queue].delayed += count  # waiting out a delay in a worker's memory
            delayed_ids.setdefault(queue, []).extend(list(members)[:BODY_SAMPLE])
        else:
            states[queue].in_flight += count

    with client.pipeline(transaction=False) as pipe:
        for queue, message_id in oldest_ids.items():
            pipe.hget(queue_keys(namespace, queue).ready_bodies, message_id)
        for queue, ids in delayed_ids.items():
            pipe.hmget(queue_keys(namespace, queue + DELAY_SUFFIX).ready_bodies, ids)
        bodies = pipe.execute()
    for queue, body in zip(oldest_ids, bodies[: len(oldest_ids)], strict=True):
        stamp = _timestamp_ms(body)
        if stamp is not None:
            states[queue].oldest_age_s = max(0.0, (now_ms - stamp) / 1000)
    for queue, sample in zip(delayed_ids, bodies[len(oldest_ids) :], strict=True):
        states[queue].retrying = sum(1 for body in sample if _is_retry(body))
    return BrokerState(states, sorted(workers.values(), key=lambda w: w.worker_id))


def _state_to_json(state: BrokerState) -> str:
    return json.dumps(
        {
            "queues": {name: asdict(q) for name, q in state.queues.items()},
            "workers": [asdict(w) for w in state.workers],
            "broker": state.broker,
            "not_measured": list(state.not_measured),
        }
    )


def _state_from_json(raw: bytes) -> BrokerState:
    data = json.loads(raw)
    return BrokerState(
        queues={name: QueueState(**q) for name, q in data["queues"].items()},
        workers=[WorkerState(**w) for w in data["workers"]],
        broker=data["broker"],
        not_measured=tuple(data["not_measured"]),
    )


class SharedBrokerState:
    """The broker's state read by one collector for the whole deployment.

    ``read_broker_state`` SCANs the keyspace for the workers' acks sets: fine once,
    not on every machine's scrape. So the state is kept in one Redis key, written by
    whichever process finds it older than ``max_age_s`` and wins a short lock (SET NX
    PX: the collector role, held for one computation at most ``max_age_s``); every
    other process reads the key (one GET), never SCANs. While another holds the role
    and no state was ever written, a reader waits up to ``wait_s`` for it."""

    def __init__(
        self,
        client: redis.Redis,
        namespace: str,
        read: Callable[[], BrokerState],
        *,
        max_age_s: float = 2.0,
        wait_s: float = 2.0,
    ) -> None:
        self.client, self.read = client, read
        self.max_age_s, self.wait_s = max_age_s, wait_s
        self.state_key = f"{namespace}:broker-state:snapshot"
        self.role_key = f"{namespace}:broker-state:collector"

    def get(self) -> BrokerState:
        deadline = time.monotonic() + self.wait_s
        while True:
            stored = self._stored()
            if stored is not None and stored[0] < self.max_age_s:
                return stored[1]
            role_ms = max(100, int(self.max_age_s * 1000))
            if self.client.set(self.role_key, "1", nx=True, px=role_ms):
                state = self.read()
                payload = json.dumps({"at": time.time(), "state": _state_to_json(state)})
                # Kept a while after it is stale: another reader's fallback.
                self.client.set(self.state_key, payload, px=role_ms * 30)
                return state
            if stored is not None:
                return stored[1]  # another process is refreshing it: this one will do
            if time.monotonic() > deadline:
                raise TimeoutError("the broker's state: another collector holds the role")
            time.sleep(0.05)

    def _stored(self) -> tuple[float, BrokerState] | None:
        raw = self.client.get(self.state_key)
        if raw is None:
            return None
        try:
            data = json.loads(raw)  # type: ignore[arg-type]
            return max(0.0, time.time() - float(data["at"])), _state_from_json(data["state"])
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True)
class MessageLocation:
    message_id: str
    place: (
        str  # queued | delayed [in the memory of worker W] | in flight on worker W | dead-lettered
    )
    retries: int
    error: str | None  # the last line of the recorded traceback, for dead letters


def locate(client: redis.Redis, namespace: str, queue: str, needle: str) -> list[MessageLocation]:
    """Every message of ``queue`` whose body mentions ``needle`` (an entry or session
    id), and where it is now. Scans the queue's bodies: for one job's view, not a hot
    path. An empty list means nowhere: done, or lost (the reconciler republishes)."""
    keys = queue_keys(namespace, queue)
    delayed = queue_keys(namespace, queue + DELAY_SUFFIX)
    places = (
        (keys.ready_bodies, "queued"),
        (delayed.ready_bodies, "delayed"),
        (keys.dead_bodies, "dead-lettered"),
    )
    found: list[MessageLocation] = []
    for bodies_key, place in places:
        for redis_id, body in client.hscan_iter(bodies_key, match=None, count=1000):
            if needle.encode() not in body:
                continue
            try:
                data = json.loads(body)
            except ValueError:
                continue
            options = data.get("options") if isinstance(data.get("options"), dict) else {}
            where = place
            if place != "dead-lettered":
                holder = _holder(client, namespace, redis_id, queue, delayed.queue)
                if holder and place == "queued":
                    where = f"in flight on worker {holder}"
                elif holder:
                    where = f"delayed in the memory of worker {holder}"
            traceback = str(options.get("traceback") or "").strip().splitlines()
            found.append(
                MessageLocation(
                    message_id=str(data.get("message_id")),
                    place=where,
                    retries=int(options.get("retries") or 0),
                    error=traceback[-1][:300] if traceback else None,
                )
            )
    return found


def _holder(
    client: redis.Redis, namespace: str, redis_id: bytes, *consumed_queues: str
) -> str | None:
    prefix = acks_pattern(namespace)[:-1]
    for key in client.scan_iter(match=acks_pattern(namespace), count=1000):
        name = key.decode()[len(prefix) :]
        worker_id, _, consumed = name.partition(".")
        if consumed in consumed_queues and client.sismember(key, redis_id):  # type: ignore[arg-type]
            return str(worker_id)
    return None


def broker_lost_data(client: redis.Redis, namespace: str) -> bool:
    """True the first time it is asked after the broker's data went away (and on the
    very first run): a marker key with no expiry disappears only with the data."""
    return bool(client.set(f"{namespace}:reconciler:alive-since", int(time.time()), nx=True))


def pending_messages(client: redis.Redis, namespace: str, queue: str) -> int:
    """Messages of ``queue`` not yet acknowledged: stored bodies (ready or taken by a
    worker) plus the ready list (benchmarks wait for this to reach zero)."""
    keys = queue_keys(namespace, queue)
    return int(client.hlen(keys.ready_bodies)) + int(client.llen(keys.ready))
