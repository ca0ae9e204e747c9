"""The connection budget: how many PostgreSQL and Redis connections a deployment opens,
at rest and at peak, computed from the settings alone (pure arithmetic, no I/O).
``emotionviz doctor`` compares it with the servers' limits; docs/operations.md ("The
connection budget") gives the same formula in prose.

A machine runs the worker (images, analytics, maintenance) and the intake worker, each
with a metrics server and a container health check; the scheduler, the console and an
operator's command run once per deployment. Per worker process:

- PostgreSQL: its pool (kept open at rest, warmed at boot) and the pool's overflow at
  peak (db/engine.py pool_for_threads: sized to the threads unless DB_POOL_SIZE says);
- Redis: two blocking pools (the broker's and ours), each at most REDIS_MAX_CONNECTIONS
  and never more than the threads that can hold one at once (worker threads, Dramatiq's
  two consumer threads per queue, the heartbeat), plus the wake-up subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass

from db.engine import pool_for_threads
from workers.settings import Settings

# The compose layout (docker-compose.yml): the worker consumes three queues, the intake
# worker one, with 1 process x 16 threads.
WORKER_QUEUES = 3
INTAKE_QUEUES = 1
INTAKE_PROCESSES = 1
INTAKE_THREADS = 16
# A console serves sync handlers from AnyIO's thread pool (40 threads by default).
CONSOLE_THREADS = 40


@dataclass(frozen=True)
class Load:
    """Connections one instance opens: kept open at rest, at most at peak."""

    rest: int
    peak: int

    def __add__(self, other: Load) -> Load:
        return Load(self.rest + other.rest, self.peak + other.peak)

    def times(self, n: int) -> Load:
        return Load(self.rest * n, self.peak * n)


@dataclass(frozen=True)
class Service:
    name: str
    instances: int  # machines for per-machine services, else 1
    postgres: Load  # per instance
    redis: Load  # per instance
    detail: str
    # Sessions on DATABASE_DIRECT_URL that no pooler may share (the completion events'
    # LISTEN): PostgreSQL sees them even behind PgBouncer.
    direct: Load = Load(0, 0)

    @property
    def direct_total(self) -> Load:
        return self.direct.times(self.instances)

    @property
    def postgres_total(self) -> Load:
        return self.postgres.times(self.instances)

    @property
    def redis_total(self) -> Load:
        return self.redis.times(self.instances)


@dataclass(frozen=True)
class Limits:
    """What the servers accept: PostgreSQL's max_connections minus the reserved slots,
    Redis's maxclients."""

    postgres_max: int
    postgres_reserved: int
    redis_maxclients: int

    @property
    def postgres_available(self) -> int:
        return self.postgres_max - self.postgres_reserved


@dataclass(frozen=True)
class PoolerLimits:
    """PgBouncer's: the clients it accepts, the server connections it opens for us."""

    max_client_conn: int
    server_connections: int


@dataclass(frozen=True)
class Verdict:
    postgres_peak: int  # what PostgreSQL itself sees
    redis_peak: int
    postgres_fits: bool
    redis_fits: bool
    max_machines: int  # the most machines that fit (0: not even one)
    pooler_clients_peak: int | None = None  # behind PgBouncer: its clients at peak
    pooler_fits: bool = True  # they fit its max_client_conn (True when unknown)

    @property
    def fits(self) -> bool:
        return self.postgres_fits and self.redis_fits and self.pooler_fits


def _redis_pool(settings: Settings, threads: int, queues: int) -> int:
    """Connections one blocking Redis pool of a worker process can hold at once: the
    threads, two per queue, the wake-ups, and the pause sync's look (every 5 s, its own
    thread: workers/messaging/pause_sync.py)."""
    holders = threads + 2 * queues + 2
    return min(settings.redis_max_connections, holders)


def worker_service(
    settings: Settings, name: str, processes: int, threads: int, queues: int
) -> Service:
    """A worker of ``processes`` x ``threads`` consuming ``queues`` queues (the
    deployment's layout in ``services``; another layout, as scripts/fleet's, by hand)."""
    pool, overflow = pool_for_threads(threads, settings.db_pool_size, settings.db_max_overflow)
    process_pg = Load(pool, pool + overflow)
    redis_pool = _redis_pool(settings, threads, queues)
    # At rest: the consumers' fetches and heartbeat on the broker's pool, one of ours,
    # the wake-up subscriber; at peak both pools full.
    process_redis = Load(queues + 2, 2 * redis_pool + 1)
    pg = process_pg.times(processes)
    redis = process_redis.times(processes)
    parts = [f"{processes} x {threads} threads, pool {pool}+{overflow} each"]
    if settings.metrics_port:
        # The metrics server's snapshot (one connection, kept) and a /readyz check.
        pg, redis = pg + Load(1, 2), redis + Load(1, 3)
        parts.append("metrics server")
    # The container's `emotionviz health`: one short connection to each.
    pg, redis = pg + Load(0, 1), redis + Load(0, 1)
    parts.append("health check")
    direct = Load(0, 0)
    if settings.events_queue or settings.events_webhook_url:
        # Each process's completion-event dispatcher LISTENs on a session of its own.
        direct = Load(processes, processes)
        parts.append("events LISTEN")
    return Service(name, 0, pg + direct, redis, ", ".join(parts), direct)


def services(
    settings: Settings,
    machines: int,
    *,
    intake_processes: int = INTAKE_PROCESSES,
    intake_threads: int = INTAKE_THREADS,
) -> list[Service]:
    """Every service of a deployment of ``machines`` machines, from the settings."""
    worker = worker_service(
        settings, "worker", settings.worker_processes, settings.worker_threads, WORKER_QUEUES
    )
    per_machine = [worker]
    if intake_processes:
        per_machine.append(
            worker_service(
                settings, "intake-worker", intake_processes, intake_threads, INTAKE_QUEUES
            )
        )
    console_pool, console_overflow = pool_for_threads(
        settings.worker_threads, settings.db_pool_size, settings.db_max_overflow
    )
    console_peak = min(console_pool + console_overflow, CONSOLE_THREADS)
    once = [
        # APScheduler's jobs publish and plan on one connection at a time; its lock and
        # the producer on Redis.
        Service("scheduler", 1, Load(1, 2), Load(1, 2), "one per deployment"),
        Service(
            "console",
            1,
            Load(1, console_peak),
            Load(1, min(settings.redis_max_connections, CONSOLE_THREADS)),
            f"one per deployment, pool {console_pool}+{console_overflow}",
        ),
        # An operator's command (status, reconcile, migrate, doctor itself).
        Service("cli", 1, Load(0, 1), Load(0, 1), "an operator's command at a time"),
    ]
    return [
        *(Service(s.name, machines, s.postgres, s.redis, s.detail, s.direct) for s in per_machine),
        *once,
    ]


def totals(items: list[Service]) -> tuple[Load, Load]:
    pg, redis = Load(0, 0), Load(0, 0)
    for s in items:
        pg, redis = pg + s.postgres_total, redis + s.redis_total
    return pg, redis


def verdict(
    settings: Settings,
    machines: int,
    limits: Limits,
    *,
    pooled: bool = False,
    pooler: PoolerLimits | None = None,
    direct_peak: int = 2,
    intake_processes: int = INTAKE_PROCESSES,
    intake_threads: int = INTAKE_THREADS,
) -> Verdict:
    """Does the deployment fit the servers at peak? Behind PgBouncer the product's
    connections are PgBouncer's clients (checked against its max_client_conn when
    known); PostgreSQL itself sees PgBouncer's server connections (when known) and the
    direct sessions (``direct_peak``: a migration, a LISTEN)."""
    kw = {"intake_processes": intake_processes, "intake_threads": intake_threads}

    def at(n: int) -> tuple[Load, Load, int]:
        """(PostgreSQL clients, Redis, sessions that bypass a pooler) of n machines."""
        items = services(settings, n, **kw)
        pg, redis = totals(items)
        sessions = sum(s.direct_total.peak for s in items)
        if pooled:  # the events' LISTEN sessions go straight to PostgreSQL
            pg = Load(pg.rest - sum(s.direct_total.rest for s in items), pg.peak - sessions)
        return pg, redis, sessions

    pg, redis, sessions = at(machines)
    server_side = direct_peak + (pooler.server_connections if pooler else 0)
    postgres_peak = server_side + sessions if pooled else pg.peak
    postgres_fits = postgres_peak <= limits.postgres_available
    redis_fits = redis.peak <= limits.redis_maxclients
    pooler_fits = pooler is None or pg.peak <= pooler.max_client_conn
    # The most machines that fit: per-machine part and the fixed part of the totals.
    one_pg, one_redis, one_s = at(1)
    zero_pg, zero_redis, zero_s = at(0)
    per_pg, per_redis = one_pg.peak - zero_pg.peak, one_redis.peak - zero_redis.peak
    fit = [_most(limits.redis_maxclients - zero_redis.peak, per_redis)]
    if not pooled:
        fit.append(_most(limits.postgres_available - zero_pg.peak, per_pg))
    else:
        if pooler is not None:
            fit.append(_most(pooler.max_client_conn - zero_pg.peak, per_pg))
        if one_s > zero_s:  # PostgreSQL's side grows with the machines' LISTEN sessions
            fit.append(_most(limits.postgres_available - server_side - zero_s, one_s - zero_s))
        elif not postgres_fits:
            fit.append(0)  # PostgreSQL's side does not grow with the machines
    return Verdict(
        postgres_peak,
        redis.peak,
        postgres_fits,
        redis_fits,
        min(fit),
        pg.peak if pooled else None,
        pooler_fits,
    )


def _most(room: int, each: int) -> int:
    if room < 0:
        return 0
    return room // each if each > 0 else 1_000_000
