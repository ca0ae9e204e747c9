"""``emotionviz doctor [--machines N] [--json]``: does this configuration fit the servers?

The PostgreSQL and Redis connections each service opens at rest and at peak, from the
settings (workers/observability/connection_budget.py), for N machines, against the
servers' limits: PostgreSQL's max_connections less its reserved slots (read through
DATABASE_DIRECT_URL), Redis's maxclients (CONFIG GET, else REDIS_MAXCLIENTS), and behind
PgBouncer its max_client_conn and pool (its admin console, when it lets us read them).
Exit 0 when the peak fits, 1 when it does not (or Redis's limit cannot be read), 2 on
bad input.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from domain.errors import EmotionVizError
from workers.entrypoints.cli_contract import emit_json, out
from workers.observability.connection_budget import (
    Limits,
    PoolerLimits,
    Service,
    services,
    totals,
    verdict,
)
from workers.settings import Settings


def _redis_maxclients(settings: Settings) -> int:
    import redis

    from workers import bootstrap
    from workers.messaging.redis_clients import client_for

    client = client_for(bootstrap.redis_url(settings), socket_timeout=5)  # Sentinel too
    try:
        found = client.config_get("maxclients")
        return int(str(found["maxclients"]))
    except (redis.exceptions.ResponseError, KeyError, ValueError):
        # CONFIG refused (a managed Redis, an ACL, a renamed command): the setting.
        if settings.redis_maxclients is None:
            raise EmotionVizError(
                "Redis refused CONFIG GET maxclients: set REDIS_MAXCLIENTS to its value"
            ) from None
        return settings.redis_maxclients
    finally:
        client.close()


def _line(s: Service) -> str:
    pg, rd = s.postgres_total, s.redis_total
    return (
        f"{s.name:<13} x{s.instances:<4} PostgreSQL {pg.rest:>5} at rest {pg.peak:>6} at peak"
        f"   Redis {rd.rest:>5} at rest {rd.peak:>6} at peak   ({s.detail})"
    )


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from db.server_limits import pgbouncer_config, postgres_slots, session_jit
    from workers import bootstrap
    from workers.messaging.redis_clients import SENTINEL_LINKS_PER_PROCESS, sentinel_count

    pooled = settings.database_pooler == "pgbouncer"
    slots = postgres_slots(bootstrap.database_direct_url(settings))
    limits = Limits(slots.max_connections, slots.reserved, _redis_maxclients(settings))
    notes = []
    pooler: PoolerLimits | None = None
    if pooled:
        url = bootstrap.database_url(settings)
        config = pgbouncer_config(url)
        if config is None:
            notes.append(
                "PgBouncer's limits not read (its admin console refused this user: add it "
                "to stats_users): its max_client_conn and pool are not checked"
            )
        else:
            pooler = PoolerLimits(config.max_client_conn, config.server_connections)
        if session_jit(url) == "on":
            notes.append(
                "jit is on through PgBouncer: run ALTER ROLE <role> SET jit = off "
                "(docs/operations.md, 'Behind PgBouncer')"
            )
    sentinels = sentinel_count(bootstrap.redis_url(settings))
    if sentinels:
        # Not connections to the primary (its maxclients), but connections all the same:
        # each worker process up to 3 to each sentinel, the scheduler, console and CLI 2.
        workers = args.machines * (settings.worker_processes + args.intake_processes)
        per_sentinel = SENTINEL_LINKS_PER_PROCESS * workers + 2 * 3
        notes.append(
            f"Redis Sentinel: each of the {sentinels} sentinels gets up to {per_sentinel} "
            f"connections at peak ({SENTINEL_LINKS_PER_PROCESS} per worker process: the "
            "broker's and the client's primary lookups, the failover watch; 2 each for "
            "the scheduler, console and a command); a sentinel's maxclients (10000 by "
            "default) is not read"
        )
    kw: dict[str, Any] = {
        "intake_processes": args.intake_processes,
        "intake_threads": args.intake_threads,
    }
    items = services(settings, args.machines, **kw)
    pg, rd = totals(items)
    result = verdict(settings, args.machines, limits, pooled=pooled, pooler=pooler, **kw)
    pg_part = (
        f"PostgreSQL {'fits' if result.postgres_fits else 'DOES NOT FIT'}: "
        f"{result.postgres_peak} at peak of {limits.postgres_available} "
        f"(max_connections {slots.max_connections} - {slots.reserved} reserved)"
    )
    if pooled:
        pg_part += (
            f" ({pooler.server_connections} PgBouncer's pool + 2 direct)" if pooler else ""
        ) + f"; {pg.peak} clients of PgBouncer at peak"
        if pooler is not None:
            pg_part += (
                f" {'fit' if result.pooler_fits else 'DO NOT FIT'} its max_client_conn "
                f"{pooler.max_client_conn}"
            )
    rd_part = (
        f"Redis {'fits' if result.redis_fits else 'DOES NOT FIT'}: "
        f"{result.redis_peak} at peak of maxclients {limits.redis_maxclients}"
    )
    summary = (
        f"{args.machines} machines {'fit' if result.fits else 'do not fit'}: {pg_part}; "
        f"{rd_part}; at most {result.max_machines} machines fit"
    )
    if args.json:
        emit_json(
            {
                "fits": result.fits,
                "machines": args.machines,
                "pooler": settings.database_pooler,
                "services": [
                    {
                        "name": s.name,
                        "instances": s.instances,
                        "per_instance": {"postgres": asdict(s.postgres), "redis": asdict(s.redis)},
                        "postgres": asdict(s.postgres_total),
                        "redis": asdict(s.redis_total),
                        "detail": s.detail,
                    }
                    for s in items
                ],
                "total": {"postgres": asdict(pg), "redis": asdict(rd)},
                "limits": {
                    "postgres_max_connections": slots.max_connections,
                    "postgres_reserved": slots.reserved,
                    "postgres_available": limits.postgres_available,
                    "redis_maxclients": limits.redis_maxclients,
                    "pgbouncer": asdict(pooler) if pooler else None,
                },
                "verdict": asdict(result),
                "notes": notes,
            }
        )
    else:
        for s in items:
            out(_line(s))
        for note in notes:
            out(f"note: {note}")
        out(("fits: " if result.fits else "DOES NOT FIT: ") + summary)
    if not result.fits:
        raise EmotionVizError(f"does not fit: {summary}")
    return 0
