"""Dramatiq's own no-op actor on the same broker and middleware as ours (benchmark
baseline). Loaded by the worker with: dramatiq workers.entrypoints.worker noop_actors --path scripts/bench
"""

from __future__ import annotations

from typing import Any

import dramatiq

import workers.entrypoints.worker  # noqa: F401 - the same broker and middleware as production


@dramatiq.actor(actor_name="bench.noop", queue_name="bench_noop", max_retries=0)
def noop(*args: Any, **kwargs: Any) -> None:
    return None
