"""The exact rate gate (one Lua script per acquire) on real Redis: the sliding window at
its edge, calls in flight and the ttl of a dead holder's slot, two clients sharing one
gate, waiting for the exact time then being admitted. Windows are ~1 s so the tests
are short; nothing here asserts speed."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from domain.errors import ProviderUnavailableError
from workers.providers.ratelimit import FULL_SLOTS, FULL_WINDOW, Attempt, RateGate

pytestmark = pytest.mark.integration

WINDOW_US = 1_000_000


class RecordingGate(RateGate):
    """The real gate, noting the Redis time of each admission (the script returns it)."""

    def __init__(self, connection: redis.Redis, key: str, **limits: Any) -> None:
        super().__init__(connection, key, **limits)
        self.admitted_at: list[int] = []
        self.refusals = 0
        self._note = threading.Lock()

    def try_acquire(self, token: str) -> Attempt:
        attempt = super().try_acquire(token)
        with self._note:
            if attempt.admitted:
                self.admitted_at.append(attempt.at_us)
            else:
                self.refusals += 1
        return attempt


@pytest.fixture
def client(redis_server_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server_url)
    yield connection
    connection.close()


def gate(
    connection: redis.Redis,
    key: str,
    *,
    per_window: int = 1000,
    max_concurrent: int = 1000,
    max_wait_s: float = 10,
    slot_ttl_ms: int = 60_000,
) -> RecordingGate:
    return RecordingGate(
        connection,
        key,
        per_minute=per_window,
        window_s=WINDOW_US / 1e6,
        margin_s=0,
        max_concurrent=max_concurrent,
        max_wait_s=max_wait_s,
        slot_ttl_ms=slot_ttl_ms,
    )


def redis_now_us(connection: redis.Redis) -> int:
    seconds, micros = connection.time()
    return int(seconds) * 1_000_000 + int(micros)


def token() -> str:
    return uuid.uuid4().hex


def test_a_full_window_answers_the_exact_time_its_oldest_admission_leaves(
    client: redis.Redis, redis_namespace: str
) -> None:
    limited = gate(client, f"{redis_namespace}:edge", per_window=3)
    first = limited.try_acquire(token())
    time.sleep(0.3)
    second = limited.try_acquire(token())
    assert first.admitted and second.admitted and limited.try_acquire(token()).admitted
    # The oldest admission leaves the window 1 µs after it is exactly one window old.
    frees_at = first.at_us + WINDOW_US + 1
    before = redis_now_us(client)
    refused = limited.try_acquire(token())
    after = redis_now_us(client)
    assert not refused.admitted and refused.why == FULL_WINDOW
    assert refused.at_us + refused.wait_s * 1e6 == pytest.approx(frees_at, abs=1)
    assert frees_at - after <= refused.wait_s * 1e6 <= frees_at - before
    # Half-way there it is still full and says the same instant.
    time.sleep(refused.wait_s / 2)
    again = limited.try_acquire(token())
    assert not again.admitted
    assert again.at_us + again.wait_s * 1e6 == pytest.approx(frees_at, abs=1)
    # Once that instant has passed, one call is admitted; the next waits for the second.
    time.sleep(max(0.0, (frees_at - redis_now_us(client)) / 1e6) + 0.01)
    fourth = limited.try_acquire(token())
    assert fourth.admitted and fourth.at_us >= frees_at
    fifth = limited.try_acquire(token())
    assert not fifth.admitted
    assert fifth.at_us + fifth.wait_s * 1e6 == pytest.approx(second.at_us + WINDOW_US + 1, abs=1)


def test_a_refused_attempt_is_not_counted(client: redis.Redis, redis_namespace: str) -> None:
    limited = gate(client, f"{redis_namespace}:refused", per_window=1)
    assert limited.try_acquire(token()).admitted
    for _ in range(5):
        assert not limited.try_acquire(token()).admitted
    assert client.zcard(f"{redis_namespace}:refused:admitted") == 1


def test_calls_in_flight_are_bounded_and_a_release_frees_the_slot_at_once(
    client: redis.Redis, redis_namespace: str
) -> None:
    limited = gate(client, f"{redis_namespace}:inflight", max_concurrent=2)
    holders = [token(), token()]
    assert all(limited.try_acquire(t).admitted for t in holders)
    refused = limited.try_acquire(token())
    assert not refused.admitted and refused.why == FULL_SLOTS
    # The wait offered is the first holder's expiry: an upper bound.
    assert 0 < refused.wait_s <= 60
    limited.release(holders[0])
    assert limited.try_acquire(token()).admitted


def test_a_dead_holders_slot_frees_itself_after_its_ttl(
    client: redis.Redis, redis_namespace: str
) -> None:
    key = f"{redis_namespace}:ttl"
    short = gate(client, key, max_concurrent=2, slot_ttl_ms=300)
    long = gate(client, key, max_concurrent=2, slot_ttl_ms=60_000, max_wait_s=2)
    dead = short.try_acquire(token())  # never released, as if its process died
    assert dead.admitted
    live = token()
    assert long.try_acquire(live).admitted  # held for the rest of the test
    refused = long.try_acquire(token())
    assert not refused.admitted and refused.why == FULL_SLOTS
    assert refused.wait_s <= 0.3  # the dead holder's expiry comes first
    time.sleep(0.35)
    # The dead holder's slot is free although the live one keeps the key alive.
    with long.slot():
        assert long.admitted_at[-1] - dead.at_us >= 300_000
        assert client.zcard(f"{key}:holders") == 2
    long.release(live)
    assert client.zcard(f"{key}:holders") == 0


def test_a_waiting_thread_takes_a_slot_released_in_its_process(
    client: redis.Redis, redis_namespace: str
) -> None:
    limited = gate(client, f"{redis_namespace}:handover", max_concurrent=1, slot_ttl_ms=60_000)
    in_flight, peak, lock = 0, 0, threading.Lock()

    def call() -> None:
        nonlocal in_flight, peak
        with limited.slot():
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.02)
            with lock:
                in_flight -= 1

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 1 and len(limited.admitted_at) == 8


class SlowAskingGate(RecordingGate):
    """Each question to Redis takes 50 ms longer, and the gate notes how many were asked
    at once."""

    def __init__(self, connection: redis.Redis, key: str, **limits: Any) -> None:
        super().__init__(connection, key, **limits)
        self.asking = self.peak_asking = 0

    def try_acquire(self, token: str) -> Attempt:
        with self._note:
            self.asking += 1
            self.peak_asking = max(self.peak_asking, self.asking)
        time.sleep(0.05)
        try:
            return super().try_acquire(token)
        finally:
            with self._note:
                self.asking -= 1


def test_threads_ask_in_parallel_while_the_gate_has_room(
    client: redis.Redis, redis_namespace: str
) -> None:
    roomy = SlowAskingGate(
        client,
        f"{redis_namespace}:roomy",
        per_minute=1000,
        window_s=1,
        margin_s=0,
        max_concurrent=1000,
        max_wait_s=10,
        slot_ttl_ms=60_000,
    )
    release, inside = threading.Event(), threading.Barrier(7, timeout=10)

    def call() -> None:
        with roomy.slot():
            inside.wait()
            release.wait(5)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    inside.wait()  # every thread has asked and been admitted
    release.set()
    for thread in threads:
        thread.join()
    # The six asked at once, each admitted at its first question (they used to take
    # turns behind one lock: a burst's last caller waited for all the others).
    assert roomy.peak_asking == 6
    assert len(roomy.admitted_at) == 6 and roomy.refusals == 0


def test_a_caller_sleeps_the_exact_wait_then_is_admitted(
    client: redis.Redis, redis_namespace: str
) -> None:
    limited = gate(client, f"{redis_namespace}:wait", per_window=2)
    for _ in range(2):
        with limited.slot():
            pass
    with limited.slot():
        pass
    first, _, third = limited.admitted_at
    assert third - first > WINDOW_US
    # One refusal, then the admission: it slept the time it was told, it did not poll.
    assert limited.refusals == 1


def test_a_gate_still_full_at_the_deadline_raises_a_transient_error_with_a_retry_time(
    client: redis.Redis, redis_namespace: str
) -> None:
    limited = gate(client, f"{redis_namespace}:full", per_window=1, max_wait_s=0.2)
    with limited.slot():
        pass
    with (
        pytest.raises(ProviderUnavailableError, match="requests per minute") as raised,
        limited.slot(),
    ):
        pass
    assert raised.value.retry_after_s is not None and raised.value.retry_after_s >= 0.2
    assert len(limited.admitted_at) == 1


def test_two_clients_sharing_one_gate_never_exceed_the_window(
    redis_server_url: str, redis_namespace: str
) -> None:
    # Two "machines": their own connections and gate objects, one key.
    per_window = 5
    connections = [redis.Redis.from_url(redis_server_url) for _ in range(2)]
    gates = [
        gate(c, f"{redis_namespace}:shared", per_window=per_window, max_concurrent=3)
        for c in connections
    ]
    stop_at = time.monotonic() + 3.5
    in_flight, peak, lock = 0, 0, threading.Lock()

    def hammer(limited: RecordingGate) -> None:
        nonlocal in_flight, peak
        while time.monotonic() < stop_at:
            try:
                with limited.slot():
                    with lock:
                        in_flight += 1
                        peak = max(peak, in_flight)
                    time.sleep(0.01)
                    with lock:
                        in_flight -= 1
            except ProviderUnavailableError:
                pass

    threads = [threading.Thread(target=hammer, args=(g,)) for g in gates for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for c in connections:
        c.close()
    admitted = sorted(gates[0].admitted_at + gates[1].admitted_at)
    # The window was filled and slid at least twice, by both clients.
    assert len(admitted) >= 3 * per_window
    assert gates[0].admitted_at and gates[1].admitted_at
    # Any per_window + 1 consecutive admissions span more than one window.
    assert all(
        later - earlier > WINDOW_US
        for earlier, later in zip(admitted, admitted[per_window:], strict=False)
    )
    assert peak <= 3
