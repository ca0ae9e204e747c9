"""Every Redis client of the product is built here, from a URL: one server
(``redis://``, ``rediss://``, ``unix://``) or a primary found through Redis Sentinel
(``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]``).

redis-py's default pool refuses a 101st simultaneous connection (MaxConnectionsError):
with hundreds of worker threads touching Redis at once that failed jobs. A blocking
pool makes a thread wait for a free connection instead; a Redis call takes well under a
millisecond, so a few dozen connections serve hundreds of threads.

Behind Sentinel the pool asks the sentinels for the primary's address before each new
connection and drops the connections to an old primary when the address changes
(redis-py's SentinelConnectionPool): producers and workers follow a failover without a
restart. The URL's password is the primary's (and its replicas'); the sentinels are
asked without one.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from domain.sentinel_url import SentinelTarget, is_sentinel_url, parse_sentinel_url

# How long a thread waits for a free connection before the call fails (and its job is
# retried): far longer than any healthy wait, short enough to surface a stuck pool.
POOL_WAIT_S = 20.0

# A question to one sentinel: a dead one must not hold up the others for long.
SENTINEL_TIMEOUT_S = 0.5
# A connection to the primary: a primary gone without a reset (a dead host, not a dead
# process) must not hold a thread for ever; a failover takes longer than this anyway.
PRIMARY_CONNECT_S = 5.0
PRIMARY_SOCKET_S = 30.0


class _Sentinel(Sentinel):
    """redis-py's manager, whose "no master" error is one short line: redis-py's lists
    each sentinel's client repr (hundreds of characters in a health check's line)."""

    def discover_master(self, service_name: str) -> Any:
        try:
            return super().discover_master(service_name)  # type: ignore[no-untyped-call]
        except MasterNotFoundError:
            where = ",".join(
                f"{c.get_connection_kwargs().get('host')}:{c.get_connection_kwargs().get('port')}"
                for c in self.sentinels
            )
            raise MasterNotFoundError(
                f"no primary for {service_name!r}: the sentinels at {where} name none "
                "(unreachable, or the primary is down and not yet replaced)"
            ) from None


def _sentinel(target: SentinelTarget) -> Sentinel:
    """redis-py's Sentinel manager: it asks the sentinels in turn for the primary."""
    return _Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            # A dead sentinel is skipped for the next at once: redis-py's default retries
            # (1, 2 s backoff) made every lookup wait 3.5 s per dead sentinel.
            "retry": Retry(NoBackoff(), 0),
        },
    )


def _primary_kwargs(target: SentinelTarget) -> dict[str, Any]:
    return {
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "socket_connect_timeout": PRIMARY_CONNECT_S,
        "socket_timeout": PRIMARY_SOCKET_S,
        "socket_keepalive": True,
    }


def sentinel_manager(url: str) -> tuple[Sentinel, SentinelTarget]:
    """The Sentinel manager of a ``redis+sentinel://`` URL and the URL parsed (the
    failover watch asks the sentinels directly)."""
    target = parse_sentinel_url(url)
    return _sentinel(target), target


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool (asks for the primary, drops connections to an old one) with the
    blocking pool's wait for a free connection (module docstring). The MRO puts
    Sentinel's methods first and BlockingConnectionPool's queue under them."""


def pooled_client(url: str, max_connections: int, *, wait_s: float = POOL_WAIT_S) -> redis.Redis:
    """A client on a blocking pool of ``max_connections``. A thread that finds no free
    connection within ``wait_s`` gets redis.ConnectionError("No connection available."),
    which the rate gate turns into a transient error (workers/providers/ratelimit.py)."""
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        client: redis.Redis = _sentinel(target).master_for(  # type: ignore[no-untyped-call]
            target.service,
            connection_pool_class=BlockingSentinelConnectionPool,
            max_connections=max_connections,
            timeout=wait_s,
            **_primary_kwargs(target),
        )
        return client
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=wait_s
    )
    return redis.Redis(connection_pool=pool)


def client_for(url: str, **kwargs: Any) -> redis.Redis:
    """A plain client for one short task (a health check, a CLI command, the
    scheduler's guard): ``redis.Redis.from_url`` for one server, the Sentinel-managed
    primary otherwise. ``kwargs`` are connection options (socket_timeout...)."""
    if is_sentinel_url(url):
        target = parse_sentinel_url(url)
        options = {**_primary_kwargs(target), **kwargs}
        manager = _sentinel(target)
        client: redis.Redis = manager.master_for(target.service, **options)  # type: ignore[no-untyped-call]
        return client
    return redis.Redis.from_url(url, **kwargs)


# Connections a process holds to each sentinel at most: one per Sentinel manager (the
# broker's client, our client when BROKER_URL is separate, the failover watch).
SENTINEL_LINKS_PER_PROCESS = 3


def sentinel_count(url: str) -> int:
    """How many sentinels the URL names (0 for one server): each process that watches
    for failovers holds a connection to each (the connection budget)."""
    return len(parse_sentinel_url(url).sentinels) if is_sentinel_url(url) else 0
