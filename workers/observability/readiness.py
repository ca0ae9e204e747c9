"""Readiness: can this deployment take work? The database answers with its schema at
the code's migration head, and the broker answers. Shared by /readyz and
``emotionviz health``."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from workers.settings import Settings


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def check_readiness(settings: Settings, database_url: str, redis_url: str) -> list[Check]:
    from db.readiness import schema_state
    from workers.logging import scrub

    checks: list[Check] = []
    try:
        state = schema_state(database_url)
        if state.at_head:
            checks.append(Check("database", True, f"schema at {', '.join(state.head)}"))
        else:
            current = ", ".join(state.current) or "empty"
            checks.append(
                Check(
                    "database",
                    False,
                    f"schema at {current}, code expects {', '.join(state.head)}: "
                    "run 'emotionviz migrate'",
                )
            )
    except Exception as exc:  # noqa: BLE001 - any failure is a failed check, in one line
        checks.append(Check("database", False, scrub(str(exc).splitlines()[0][:300])))
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
        checks.append(Check("broker", True, "redis answers"))
    except redis.RedisError as exc:
        checks.append(Check("broker", False, f"redis unreachable: {scrub(str(exc))[:300]}"))
    return checks
