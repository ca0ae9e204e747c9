"""Rate limits per model, shared by every worker process through Redis.

Two Dramatiq limiters per model: a WindowRateLimiter for requests per minute and a
ConcurrentRateLimiter for calls in flight. A call waits (with jitter) for both, at most
RATE_LIMIT_WAIT_S; past that the job is retried later instead of holding a thread.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator

from dramatiq.rate_limits import ConcurrentRateLimiter, WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from domain.errors import ProviderUnavailableError
from workers.observability import metrics


class RateGate:
    def __init__(
        self,
        backend: RedisBackend,
        key: str,
        *,
        per_minute: int,
        max_concurrent: int,
        max_wait_s: float,
        slot_ttl_ms: int,
    ) -> None:
        self.key = key
        self.max_wait_s = max_wait_s
        self._window = WindowRateLimiter(backend, f"{key}:rpm", limit=per_minute, window=60)
        # ttl frees a slot whose holder died without releasing it.
        self._concurrent = ConcurrentRateLimiter(
            backend, f"{key}:inflight", limit=max_concurrent, ttl=slot_ttl_ms
        )

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        started = time.monotonic()
        deadline = started + self.max_wait_s
        with contextlib.ExitStack() as stack:
            self._wait(stack, self._concurrent, "concurrent calls", deadline)
            self._wait(stack, self._window, "requests per minute", deadline)
            metrics.observe_rate_limit_wait(self.key.rsplit(":", 1)[-1], time.monotonic() - started)
            yield

    def _wait(
        self,
        stack: contextlib.ExitStack,
        limiter: ConcurrentRateLimiter | WindowRateLimiter,
        what: str,
        deadline: float,
    ) -> None:
        delay = 0.05
        while True:
            context = limiter.acquire(raise_on_failure=False)
            acquired = stack.enter_context(context)
            if acquired:
                return
            if time.monotonic() + delay > deadline:
                raise ProviderUnavailableError(
                    f"rate limit for {self.key} ({what}) still full after {self.max_wait_s:.0f}s",
                    retry_after_s=self.max_wait_s,
                )
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 1.0)
