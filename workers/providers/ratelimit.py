"""Rate limits per model, shared by every worker process (on any machine) through Redis.

One Lua script per gate enforces both limits atomically, on Redis's clock (TIME), so
processes on different machines agree on what "the last minute" is:

- requests per window: a sliding log (a ZSET of admission times), exact to the
  microsecond, the way the API's per-minute quota counts;
- calls in flight: a ZSET of slot tokens scored by their expiry, so the slot of a holder
  that died without releasing frees itself after ``slot_ttl_ms``.

Acquire is ONE round trip that answers "admitted" or the exact time until the window has
room; release is one ZREM. Inside ``releases_batched()`` (a job's steps: the entry's
two calls) a release is sent at once but its reply is read with the thread's next gate
command, or when the block ends: Redis frees the slot as soon as before, and the thread
does not wait for the answer (each wait for Redis costs ~0.1-0.2 ms of CPU on this
machine, the wake-up's more than the command's own). A caller that is refused sleeps
that long (plus a little jitter) instead of polling blindly. While the gate has room,
threads ask in parallel; once one is refused, only that thread of the process talks to
Redis for the gate (the others queue on a local lock behind it), so a full gate costs
one round trip per process per freed slot, not one per waiting thread.

The window is held ``margin_s`` longer than 60 s. We count a call when we admit it, the
API when it arrives, a little later; that delay varies (GIL, scheduling: a burst of
admissions leaves one process one request at a time), and a call whose delay is shorter
than that of the call it replaces 60 s earlier would arrive while the API still counts
the old one. The margin absorbs that jitter (on a loaded 2-core machine the spread
reached ~0.2 s: scripts/bench_quota.py, margin 0, gets 429s); its cost is at most
margin / (60 + margin) of the quota when every second of the minute is busy (0.5 s:
0.8 %), nothing when the quota is filled in bursts.

``DramatiqRateGate`` is the previous limiter (Dramatiq's WindowRateLimiter, counted in
1-second buckets, and ConcurrentRateLimiter, with blind polling), kept so a benchmark
can compare both in one run (RATE_LIMITER=dramatiq).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import redis
from dramatiq.rate_limits import ConcurrentRateLimiter, WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from domain.errors import ProviderUnavailableError
from domain.redaction import redact
from workers.logging import get_logger
from workers.observability import metrics

log = get_logger("emotionviz.ratelimit")

WINDOW_S = 60.0
# Added to a wait so that waiters of different processes do not all hit Redis at once.
JITTER_S = 0.005
# A slot freed by another process wakes nobody here: look again this often meanwhile.
CONCURRENCY_RECHECK_S = 0.1

# KEYS: admissions log, holders. ARGV: token, limit, window_us, max_concurrent, ttl_us.
# Returns {1, 0, 0, now_us} (admitted at now) or {0, wait_us, why, now_us}: why 1 = the
# window is full (the wait is exact), 2 = every slot is held (the wait is the first
# holder's expiry, an upper bound: a holder usually releases sooner).
ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit, window = tonumber(ARGV[2]), tonumber(ARGV[3])
local max_concurrent, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%.0f', now - window))
local admitted = redis.call('ZCARD', KEYS[1])
if admitted >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], admitted - limit, admitted - limit, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + window - now + 1, 1, now}
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', string.format('%.0f', now))
if redis.call('ZCARD', KEYS[2]) >= max_concurrent then
  local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {0, tonumber(first[2]) - now, 2, now}
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.floor(window / 1000) + 1000)
redis.call('ZADD', KEYS[2], string.format('%.0f', now + ttl), ARGV[1])
redis.call('PEXPIRE', KEYS[2], math.floor(ttl / 1000) + 1000)
return {1, 0, 0, now}
"""
ACQUIRE_SHA = hashlib.sha1(ACQUIRE_LUA.encode()).hexdigest()
FULL_WINDOW, FULL_SLOTS = 1, 2
WHAT = {FULL_WINDOW: "requests per minute", FULL_SLOTS: "concurrent calls"}

# Redis down, unreachable or too slow, or no free connection in the process's pool
# within its wait (workers/messaging/redis_clients.py): the job is retried later, like
# any transient failure, instead of failing as an unexpected error.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class _Owed(threading.local):
    """This thread's batched release whose reply is still to be read: the connection it
    was sent on (out of its pool until then) and what to log if it failed. ``batching``
    is set inside ``releases_batched()``."""

    batching = False
    pending: tuple[Any, Any, RateGate] | None = None  # (pool, connection, gate)


_owed = _Owed()


@contextlib.contextmanager
def releases_batched() -> Iterator[None]:
    """Within the block, a gate's release goes out at once without waiting for its
    reply; the reply is read with this thread's next gate command (the following
    acquire), or when the block ends. Meanwhile its connection stays out of its pool:
    the block must not wait on the gates' pool otherwise (an acquire that has to wait
    for a full gate reads the reply first)."""
    if _owed.batching:  # nested: the outer block settles
        yield
        return
    _owed.batching = True
    try:
        yield
    finally:
        _owed.batching = False
        _settle()


def _settle() -> None:
    """Read this thread's owed reply, if any, and give its connection back to its pool
    (whose checkout looks at it again before another use)."""
    owed, _owed.pending = _owed.pending, None
    if owed is None:
        return
    pool, conn, gate = owed
    try:
        conn.read_response()
    except redis.RedisError as exc:  # a dropped connection disconnects itself
        gate._release_failed(exc)
    finally:
        pool.release(conn)


class Attempt(NamedTuple):
    admitted: bool
    wait_s: float  # until a slot could free (0 when admitted)
    why: int  # FULL_WINDOW | FULL_SLOTS (0 when admitted)
    at_us: int  # Redis's clock when the script ran: the admission time if admitted


def redis_client(connection: redis.Redis | RedisBackend) -> redis.Redis:
    """The client itself; a Dramatiq RedisBackend (what callers used to pass) is unwrapped."""
    return connection.client if isinstance(connection, RedisBackend) else connection


class RateGate:
    """``slot()`` admits a call within both limits, or raises ProviderUnavailableError
    after ``max_wait_s`` (the job is then retried later instead of holding a thread), or
    at once if Redis cannot answer (the same error, saying so)."""

    def __init__(
        self,
        connection: redis.Redis | RedisBackend,
        key: str,
        *,
        per_minute: int,
        max_concurrent: int,
        max_wait_s: float,
        slot_ttl_ms: int,
        margin_s: float = 0.5,
        window_s: float = WINDOW_S,
    ) -> None:
        """``per_minute`` calls per ``window_s`` (60 s; shorter in tests), the window held
        ``margin_s`` longer (see the module docstring)."""
        self.key = key
        self.name = key.rsplit(":", 1)[-1]
        self.max_wait_s = max_wait_s
        self.slot_ttl_ms = slot_ttl_ms
        self._client = redis_client(connection)
        self._keys = [f"{key}:admitted", f"{key}:holders"]
        self._limits = [
            per_minute,
            int((window_s + margin_s) * 1_000_000),
            max_concurrent,
            slot_ttl_ms * 1000,
        ]
        # The thread at the front of this process's line; the others wait behind it.
        self._front = threading.Lock()
        # Set by a release in this process: the front thread looks again at once.
        self._freed = threading.Event()
        self._last_refusal = (0.0, FULL_WINDOW)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        started = time.monotonic()
        token = self._acquire(started + self.max_wait_s)
        metrics.observe_rate_limit_wait(self.name, time.monotonic() - started)
        try:
            yield
        finally:
            self.release(token)

    def try_acquire(self, token: str) -> Attempt:
        """One attempt (one round trip); if admitted, ``token`` holds a slot. A Redis
        that cannot answer raises ProviderUnavailableError (the job is retried)."""
        try:
            try:
                admitted, wait_us, why, at_us = self._command(
                    "EVALSHA", ACQUIRE_SHA, 2, *self._keys, token, *self._limits
                )
            except redis.exceptions.NoScriptError:  # a restarted or flushed Redis
                admitted, wait_us, why, at_us = self._command(
                    "EVAL", ACQUIRE_LUA, 2, *self._keys, token, *self._limits
                )
        except REDIS_DOWN as exc:
            raise self._redis_down(exc) from exc
        return Attempt(bool(admitted), int(wait_us) / 1_000_000, int(why), int(at_us))

    def _acquire(self, deadline: float) -> str:
        refusal: Attempt | None = None
        if not self._front.locked():
            # Nobody of this process waits for this gate (the usual case): try at once,
            # in parallel with the other threads. Queueing every call behind one lock
            # made a burst of calls (a wave of answers at 512 in flight) take one
            # round trip plus a GIL hand-off each, in turn: seconds for the last.
            token = uuid.uuid4().hex
            self._freed.clear()
            refusal = self.try_acquire(token)
            if refusal.admitted:
                return token
        _settle()  # no connection held out of the pool while this thread waits
        if not self._front.acquire(blocking=False):
            refusal = None  # stale once another thread has been at the front: ask again
            if not self._front.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise self._still_full(*self._last_refusal)
        try:
            while True:
                if refusal is not None:
                    self._wait_after(refusal, deadline)
                token = uuid.uuid4().hex
                self._freed.clear()
                refusal = self.try_acquire(token)
                if refusal.admitted:
                    return token
        finally:
            self._front.release()

    def _wait_after(self, refusal: Attempt, deadline: float) -> None:
        """Wait as long as Redis said (a slot freed in this process ends the wait early),
        or raise if that runs past ``deadline``."""
        self._last_refusal = (refusal.wait_s, refusal.why)
        wait_s = refusal.wait_s
        if refusal.why == FULL_SLOTS:
            wait_s = min(wait_s, CONCURRENCY_RECHECK_S)
        wait_s += random.uniform(0, JITTER_S)
        if time.monotonic() + wait_s > deadline:
            raise self._still_full(refusal.wait_s, refusal.why)
        if refusal.why == FULL_SLOTS:
            self._freed.wait(wait_s)
        else:
            time.sleep(wait_s)

    def release(self, token: str) -> None:
        """Free the slot. Never raises: it runs in ``slot()``'s ``finally``, where an
        error would hide the call's own outcome; a slot not released frees itself when
        its ttl runs out. Inside ``releases_batched()`` the ZREM is sent and its reply
        read later (a failure then is logged the same way)."""
        try:
            # A thread of this process waiting for a slot is told once Redis has freed
            # it: a batched release's acquire could overtake it (another connection).
            if _owed.batching and not self._front.locked():
                self._send_release(token)
            else:
                self._command("ZREM", self._keys[1], token)
        except redis.RedisError as exc:
            self._release_failed(exc)
        self._freed.set()

    def _send_release(self, token: str) -> None:
        """Send the ZREM on this thread's connection (the owed one, or one from the pool)
        and leave its reply to be read by ``_settle``."""
        _settle()
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            conn.retry.call_with_retry(
                lambda: conn.send_command("ZREM", self._keys[1], token),
                lambda _error: conn.disconnect(),
            )
        except BaseException:
            pool.release(conn)
            raise
        _owed.pending = (pool, conn, self)

    def _release_failed(self, exc: Exception) -> None:
        log.warning(
            "could not release a rate-limit slot; it frees itself when its ttl runs out",
            gate=self.name,
            ttl_s=self.slot_ttl_ms / 1000,
            reason=redact(str(exc) or type(exc).__name__),
        )

    def _command(self, *args: Any) -> Any:
        """One command on a connection of the client's pool, without the client's
        per-command layers (redis-py 8's observability recorder, argument checks and
        wrappers cost 2-3 times the round trip's own CPU: ~60 us per call, four calls
        per entry). The same pool (a blocking pool's wait, its ConnectionError when
        none frees), the same retries of a dropped connection (the connection's own
        Retry, reconnecting between attempts) and the same errors (a Redis error reply
        is raised)."""
        _settle()  # a batched release's reply, read (it has come meanwhile) first
        pool = self._client.connection_pool
        conn = pool.get_connection()
        try:
            return conn.retry.call_with_retry(
                lambda: _round_trip(conn, args), lambda _error: conn.disconnect()
            )
        finally:
            pool.release(conn)

    def _redis_down(self, exc: Exception) -> ProviderUnavailableError:
        # Worded so that failure_class() says "server_error" (or "timeout"), never
        # "rate_limited": the model's quota is not the problem. No URL, no password.
        what = str(exc) or type(exc).__name__
        return ProviderUnavailableError(
            redact(f"Redis unavailable for the rate gate of {self.name}: {what}")
        )

    def _still_full(self, wait_s: float, why: int) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            f"rate limit for {self.key} ({WHAT[why]}) still full after {self.max_wait_s:.0f}s",
            # Others are queued for the next free slot too: look again no sooner than
            # this gate would have waited.
            retry_after_s=max(wait_s, self.max_wait_s),
        )


def _round_trip(conn: Any, args: tuple[Any, ...]) -> Any:
    # A connection interrupted between the two disconnects itself (redis-py), so it
    # never goes back to the pool with an answer unread.
    conn.send_command(*args)
    return conn.read_response()


class DramatiqRateGate(RateGate):
    """The previous limiter, for comparison: Dramatiq's WindowRateLimiter (1-second
    buckets: it can admit a call the API's exact window refuses) and
    ConcurrentRateLimiter, polled with a backoff to 1 s (freed slots sit unused)."""

    def __init__(
        self,
        connection: redis.Redis | RedisBackend,
        key: str,
        *,
        per_minute: int,
        max_concurrent: int,
        max_wait_s: float,
        slot_ttl_ms: int,
        margin_s: float = 0.0,
        window_s: float = WINDOW_S,
    ) -> None:
        self.key = key
        self.name = key.rsplit(":", 1)[-1]
        self.max_wait_s = max_wait_s
        backend = RedisBackend(client=redis_client(connection))
        self._window = WindowRateLimiter(
            backend, f"{key}:rpm", limit=per_minute, window=max(1, round(window_s))
        )
        self._concurrent = ConcurrentRateLimiter(
            backend, f"{key}:inflight", limit=max_concurrent, ttl=slot_ttl_ms
        )

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        started = time.monotonic()
        deadline = started + self.max_wait_s
        with contextlib.ExitStack() as stack:
            self._wait(stack, self._concurrent, FULL_SLOTS, deadline)
            self._wait(stack, self._window, FULL_WINDOW, deadline)
            metrics.observe_rate_limit_wait(self.name, time.monotonic() - started)
            yield

    def _wait(
        self,
        stack: contextlib.ExitStack,
        limiter: ConcurrentRateLimiter | WindowRateLimiter,
        why: int,
        deadline: float,
    ) -> None:
        delay = 0.05
        while True:
            acquired = stack.enter_context(limiter.acquire(raise_on_failure=False))
            if acquired:
                return
            if time.monotonic() + delay > deadline:
                raise self._still_full(0.0, why)
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
