"""The one Redis client of a worker process for our own reads and writes (rate gates,
counters, status, dead letters).

redis-py's default pool refuses a 101st simultaneous connection (MaxConnectionsError):
with hundreds of worker threads touching Redis at once that failed jobs. A blocking
pool makes a thread wait for a free connection instead; a Redis call takes well under a
millisecond, so a few dozen connections serve hundreds of threads.
"""

from __future__ import annotations

import redis

# How long a thread waits for a free connection before the call fails (and its job is
# retried): far longer than any healthy wait, short enough to surface a stuck pool.
POOL_WAIT_S = 20.0


def pooled_client(url: str, max_connections: int, *, wait_s: float = POOL_WAIT_S) -> redis.Redis:
    """A client on a blocking pool of ``max_connections``. A thread that finds no free
    connection within ``wait_s`` gets redis.ConnectionError("No connection available."),
    which the rate gate turns into a transient error (workers/providers/ratelimit.py)."""
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_s
    )
    return redis.Redis(connection_pool=pool)
