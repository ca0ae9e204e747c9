"""``emotionviz worker``: Dramatiq worker processes on our broker and actors."""

from __future__ import annotations

import argparse
import os
import sys
import time

from domain.errors import ConfigurationError, EmotionVizError
from workers import bootstrap
from workers.logging import get_logger
from workers.settings import Settings

log = get_logger("emotionviz.worker")

# Dramatiq waits this long for running jobs on SIGTERM before requeueing them; a
# supervisor's stop grace must be longer (docker-compose.yml: stop_grace_period).
SHUTDOWN_TIMEOUT_MS = 60_000


def worker_command(
    settings: Settings, *, processes: int, threads: int, queues: list[str] | None
) -> list[str]:
    args = [
        sys.executable,
        "-m",
        "dramatiq",
        "workers.entrypoints.worker",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--skip-logging",
        "--worker-shutdown-timeout",
        str(SHUTDOWN_TIMEOUT_MS),
    ]
    if queues:
        args += ["--queues", *queues]
    return args


def worker_env(settings: Settings) -> dict[str, str]:
    """Resolve embedded services once, so worker processes do not race to start them."""
    return {
        **os.environ,
        "DATABASE_URL": bootstrap.database_url(settings),
        "REDIS_URL": bootstrap.redis_url(settings),
    }


def check_can_work(settings: Settings) -> None:
    """Refuse to start a worker that could only fail every job."""
    if settings.provider == "gemini" and settings.gemini_api_key is None:
        raise ConfigurationError(
            "PROVIDER=gemini needs GEMINI_API_KEY (or PROVIDER=local for the offline providers)"
        )


def wait_for_schema(database_url: str, timeout_s: float) -> None:
    """Workers never migrate (only ``emotionviz migrate`` does: several workers starting
    together would race Alembic). A worker started beside the migration waits for it."""
    from db.readiness import schema_state

    deadline = time.monotonic() + timeout_s
    while True:
        state = schema_state(database_url)
        if state.at_head:
            return
        if time.monotonic() >= deadline:
            current = ", ".join(state.current) or "empty"
            raise EmotionVizError(
                f"the database schema is at {current}, this code needs "
                f"{', '.join(state.head)}: run 'emotionviz migrate' first"
            )
        log.info("waiting for the schema migration", current=list(state.current))
        time.sleep(2)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    check_can_work(settings)
    env = worker_env(settings)
    wait_for_schema(env["DATABASE_URL"], args.schema_wait)
    if settings.metrics_port:
        from workers.observability.health import prepare_metrics_dir

        prepare_metrics_dir(settings.metrics_port, env)
    threads = args.threads or settings.worker_threads
    processes = args.processes or settings.worker_processes
    # Each process sizes its database pool to its threads (bootstrap.database_pool), and
    # takes its share of the CPUs among its processes (WORKER_CPU_AFFINITY=spread).
    env["WORKER_THREADS"] = str(threads)
    env["WORKER_PROCESSES"] = str(processes)
    command = worker_command(
        settings,
        processes=processes,
        threads=threads,
        queues=args.queues,
    )
    # Dramatiq's CLI forks the processes and shuts down gracefully on SIGTERM/SIGINT
    # (finishing or requeueing in-flight messages). When a child dies it stops the
    # others and exits non-zero: a supervisor (docker-compose's restart policy,
    # systemd) restarts the whole worker.
    os.execvpe(command[0], command, env)
    return 0  # not reached
