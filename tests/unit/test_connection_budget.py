"""The connection budget's arithmetic (workers/observability/connection_budget.py) and
the pool sized to the threads (db/engine.py pool_for_threads): no I/O."""

from __future__ import annotations

import pytest

from db.engine import Database, pool_for_threads
from workers.bootstrap import database_pool
from workers.observability.connection_budget import (
    Limits,
    Load,
    PoolerLimits,
    services,
    totals,
    verdict,
)
from workers.settings import Settings


def _settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("threads", "size", "overflow", "expected"),
    [
        (32, 0, -1, (8, 8)),  # a quarter of the threads kept, as many again at peak
        (16, 0, -1, (4, 4)),
        (8, 0, -1, (2, 2)),
        (1, 0, -1, (2, 0)),  # never more than the threads (+ heartbeat) can hold
        (3, 0, -1, (2, 2)),
        (32, 10, -1, (10, 10)),  # DB_POOL_SIZE wins, overflow as many
        (32, 10, 0, (10, 0)),
        (32, 0, 3, (8, 3)),
    ],
)
def test_pool_follows_the_threads(
    threads: int, size: int, overflow: int, expected: tuple[int, int]
) -> None:
    assert pool_for_threads(threads, size, overflow) == expected


def test_the_process_engine_is_built_with_the_pool_of_its_threads() -> None:
    # No connection is opened: SQLAlchemy connects on first use.
    for threads, pool, overflow in ((32, 8, 0), (64, 16, 0), (4, 2, 0)):
        size, extra = database_pool(_settings(worker_threads=threads))
        database = Database("postgresql://u@127.0.0.1:1/x", pool_size=size, max_overflow=extra)
        try:
            assert database.engine.pool.size() == pool  # type: ignore[attr-defined]
            assert database.engine.pool._max_overflow == overflow  # type: ignore[attr-defined]
        finally:
            database.engine.dispose()


def test_default_settings_per_machine_and_fleet() -> None:
    settings = _settings()
    by_name = {s.name: s for s in services(settings, 3)}
    # worker: 2 processes x (pool 8, no overflow) + metrics server (1..2) + health (0..1)
    assert by_name["worker"].postgres == Load(17, 19)
    assert by_name["worker"].postgres_total == Load(51, 57)
    # intake worker: 1 x 16 threads -> pool 4, + metrics server + health
    assert by_name["intake-worker"].postgres == Load(5, 7)
    assert by_name["scheduler"].postgres_total == Load(1, 2)
    assert by_name["console"].postgres_total == Load(1, 8)
    assert by_name["cli"].postgres_total == Load(0, 1)
    # Redis per worker process: rest queues + 2 (5), peak 2 pools of min(64, 32 + 2x3 + 2)
    # + the subscriber (81); then the metrics server (1..3) and health (0..1).
    assert by_name["worker"].redis == Load(2 * 5 + 1, 2 * 81 + 3 + 1)
    pg, redis = totals(services(settings, 3))
    assert pg == Load(22 * 3 + 2, 26 * 3 + 11)
    assert redis == Load(15 * 3 + 2, 211 * 3 + 43)


def test_verdict_against_the_servers_limits() -> None:
    settings = _settings()
    limits = Limits(postgres_max=100, postgres_reserved=3, redis_maxclients=10_000)
    one = verdict(settings, 1, limits)
    assert one.fits and one.postgres_peak == 37 and one.max_machines == 3
    assert verdict(settings, 3, limits).fits  # 89 of 97
    four = verdict(settings, 4, limits)
    assert not four.fits and not four.postgres_fits and four.redis_fits
    assert four.postgres_peak == 115
    # Behind PgBouncer, PostgreSQL sees the direct sessions; Redis bounds the fleet.
    pooled = verdict(settings, 10, limits, pooled=True)
    assert pooled.fits and pooled.postgres_peak == 2
    assert pooled.max_machines == (10_000 - 43) // 211
    thousand = verdict(settings, 1000, limits, pooled=True)
    assert not thousand.fits and not thousand.redis_fits
    # PgBouncer's limits known: PostgreSQL sees its pool + the direct sessions, and its
    # clients (26 per machine + 11) must fit max_client_conn.
    bouncer = PoolerLimits(max_client_conn=500, server_connections=40)
    ten = verdict(settings, 10, limits, pooled=True, pooler=bouncer)
    assert ten.fits and ten.postgres_peak == 42 and ten.pooler_clients_peak == 271
    assert ten.max_machines == (500 - 11) // 26
    crowd = verdict(settings, 19, limits, pooled=True, pooler=bouncer)
    assert not crowd.fits and not crowd.pooler_fits and crowd.postgres_fits
    big_pool = verdict(settings, 1, limits, pooled=True, pooler=PoolerLimits(500, 96))
    assert not big_pool.postgres_fits and big_pool.max_machines == 0


def test_settings_change_the_figures() -> None:
    small = _settings(worker_processes=1, worker_threads=8, metrics_port=0)
    worker = {s.name: s for s in services(small, 1)}["worker"]
    assert worker.postgres == Load(2, 2 + 1)  # pool 2, health 0..1
    capped = _settings(redis_max_connections=8, metrics_port=0)
    worker = {s.name: s for s in services(capped, 1)}["worker"]
    assert worker.redis.peak == 2 * (2 * 8 + 1) + 1
    fixed = _settings(db_pool_size=10, db_max_overflow=0, metrics_port=0)
    worker = {s.name: s for s in services(fixed, 1)}["worker"]
    assert worker.postgres == Load(20, 21)
    no_intake = services(_settings(), 2, intake_processes=0)
    assert [s.name for s in no_intake] == ["worker", "scheduler", "console", "cli"]


def test_completion_events_add_a_listen_session_per_worker_process() -> None:
    plain = _settings(metrics_port=0)
    events = _settings(metrics_port=0, events_queue="emotionviz-events")
    worker = {s.name: s for s in services(events, 1)}["worker"]
    base = {s.name: s for s in services(plain, 1)}["worker"]
    assert worker.direct == Load(2, 2)  # 2 processes, one LISTEN each
    assert worker.postgres == Load(base.postgres.rest + 2, base.postgres.peak + 2)
    limits = Limits(postgres_max=100, postgres_reserved=3, redis_maxclients=10_000)
    # Behind PgBouncer the LISTEN sessions reach PostgreSQL itself: 2 per machine x 2
    # worker kinds (worker 2 processes + intake 1 = 3 per machine), beside the pool.
    bouncer = PoolerLimits(max_client_conn=5_000, server_connections=40)
    ten = verdict(events, 10, limits, pooled=True, pooler=bouncer)
    assert ten.postgres_peak == 2 + 40 + 3 * 10
    assert (
        ten.pooler_clients_peak
        == verdict(plain, 10, limits, pooled=True, pooler=bouncer).pooler_clients_peak
    )
    assert ten.max_machines == (97 - 42) // 3
    crowd = verdict(events, 19, limits, pooled=True, pooler=bouncer)
    assert not crowd.postgres_fits and ten.postgres_fits
