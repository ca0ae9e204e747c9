"""Operator commands: worker, enqueue, status, dlq, replay, reconcile."""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from domain.errors import InvalidMessageError
from domain.intake import next_step, parse_history
from domain.messages import QUEUES, EntryCreated, IntakeStep, MessageV1
from domain.vocabulary import VisualizationStyle
from workers import bootstrap
from workers.settings import Settings


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
        "60000",
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


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from db import migrate

    env = worker_env(settings)
    migrate.upgrade(env["DATABASE_URL"])
    command = worker_command(
        settings,
        processes=args.processes or settings.worker_processes,
        threads=args.threads or settings.worker_threads,
        queues=args.queues,
    )
    # Dramatiq's CLI forks the processes, restarts crashed ones, and shuts down
    # gracefully on SIGTERM/SIGINT (finishing or requeueing in-flight messages).
    os.execvpe(command[0], command, env)
    return 0  # not reached


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    message: MessageV1
    if args.kind == "entry":
        with bootstrap.unit_of_work() as uow:
            entry = uow.entries.get(uuid.UUID(args.id))
        if entry is None:
            raise InvalidMessageError(f"entry {args.id} does not exist")
        message = EntryCreated(
            entry_id=uuid.UUID(args.id),
            user_id=entry.user_id,
            style=VisualizationStyle(args.style) if args.style else None,
        )
    else:
        with bootstrap.unit_of_work() as uow:
            session = uow.intake.get(uuid.UUID(args.id))
        if session is None:
            raise InvalidMessageError(f"intake session {args.id} does not exist")
        step = args.step or next_step(parse_history(session.conversation_history))
        message = IntakeStep(session_id=session.id, user_id=session.user_id, step=step)
    with bootstrap.unit_of_work() as uow:
        uow.publish(message)
        uow.commit()
    sys.stdout.write(f"published {message.actor_name} {uow.published_ids[0]}\n")
    return 0


def _queue_sizes(settings: Settings) -> dict[str, tuple[int, int, int]]:
    """(ready, delayed, dead) per queue, read from the broker's Redis keys."""
    import redis

    from workers.messaging.queues import queue_depths

    client = redis.Redis.from_url(bootstrap.redis_url(settings))
    depths = queue_depths(client, settings.redis_namespace)
    return {q: (d.ready, d.delayed, d.dead) for q, d in depths.items()}


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    sizes = _queue_sizes(settings)
    with bootstrap.unit_of_work() as uow:
        counts = uow.visualizations.status_counts()
        intake = uow.intake.state_counts()
    if args.json:
        sys.stdout.write(
            json.dumps(
                {
                    "queues": {
                        q: dict(zip(("ready", "delayed", "dead"), v, strict=True))
                        for q, v in sizes.items()
                    },
                    "visualizations": counts,
                    "intake_sessions": intake,
                }
            )
            + "\n"
        )
        return 0
    if args.quiet:
        return 0
    console = Console()
    table = Table(title="queues")
    for column in ("queue", "ready", "delayed", "dead letters"):
        table.add_column(column, justify="right" if column != "queue" else "left")
    for queue, (ready, delayed, dead) in sizes.items():
        table.add_row(queue, str(ready), str(delayed), str(dead))
    console.print(table)
    vtable = Table(title="visualizations")
    vtable.add_column("status")
    vtable.add_column("rows", justify="right")
    for status in ("pending", "processing", "completed", "failed"):
        vtable.add_row(status, str(counts.get(status, 0)))
    console.print(vtable)
    itable = Table(title="intake sessions")
    itable.add_column("state")
    itable.add_column("sessions", justify="right")
    for state, number in intake.items():
        itable.add_row(state.replace("_", " "), str(number))
    console.print(itable)
    return 0


def cmd_dlq(args: argparse.Namespace, settings: Settings) -> int:
    import redis

    from workers.messaging.dead_letters import DeadLetters

    dead = DeadLetters(
        redis.Redis.from_url(bootstrap.redis_url(settings)), settings.redis_namespace
    )
    if args.action == "list":
        for item in dead.entries(args.queue, limit=args.limit):
            sys.stdout.write(json.dumps(item) + "\n")
        return 0
    if args.action == "replay":
        moved = dead.replay(args.queue, ids=args.ids or None)
        sys.stdout.write(f"replayed {moved} dead-lettered messages on {args.queue}\n")
        return 0
    removed = dead.purge(args.queue)
    sys.stdout.write(f"purged {removed} dead-lettered messages on {args.queue}\n")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    ids = [uuid.UUID(i) for i in args.entry_ids] if args.entry_ids else None
    with bootstrap.unit_of_work() as uow:
        rows = uow.visualizations.replay_failed(ids)
        for entry_id, user_id, style in rows:
            uow.publish(
                EntryCreated(entry_id=entry_id, user_id=user_id, style=VisualizationStyle(style))
            )
        uow.commit()
    sys.stdout.write(f"replayed {len(rows)} failed visualizations\n")
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.reconcile import reconcile

    report = reconcile(
        bootstrap.unit_of_work, lease_s=settings.lease_s, grace_s=settings.reconcile_grace_s
    )
    sys.stdout.write(
        f"reconcile: republished {report.unfinished} unfinished and {report.stuck} stuck "
        f"entries, {report.intake} lost intake steps\n"
    )
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "worker", cmd_worker, "run Dramatiq worker processes (WORKER_PROCESSES x WORKER_THREADS)"
    )
    p.add_argument("--processes", type=int, help="default WORKER_PROCESSES")
    p.add_argument("--threads", type=int, help="default WORKER_THREADS")
    p.add_argument("--queues", nargs="+", choices=QUEUES, help="only these queues (default all)")

    p = add("enqueue", cmd_enqueue, "publish a message for an existing row (operators, replays)")
    p.add_argument("kind", choices=["entry", "intake"])
    p.add_argument("id", help="emotion entry id, or intake session id")
    p.add_argument("--style", choices=[s.value for s in VisualizationStyle])
    p.add_argument(
        "--step",
        type=int,
        help="intake turn to produce (default: the one the session is waiting for)",
    )

    p = add("status", cmd_status, "queue depths, dead letters and visualization states")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--quiet", action="store_true", help="no output; exit 0 if reachable (healthcheck)"
    )

    p = add("dlq", cmd_dlq, "list, replay or purge dead-lettered messages")
    p.add_argument("action", choices=["list", "replay", "purge"])
    p.add_argument("--queue", default=EntryCreated.queue_name, choices=QUEUES)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--ids", nargs="*", help="replay only these message ids")

    p = add("replay", cmd_replay, "set failed visualizations back to pending and publish them")
    p.add_argument("entry_ids", nargs="*", help="only these entries (default: every failed one)")

    add("reconcile", cmd_reconcile, "republish work the database says is unfinished or stuck")
