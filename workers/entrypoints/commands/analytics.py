"""``emotionviz analytics recompute`` and ``emotionviz scheduler``."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from domain.messages import AnalyticsRecompute
from domain.periods import PeriodKind, period_containing
from workers import bootstrap
from workers.entrypoints.cli_contract import (
    InputError,
)
from workers.operations.audit import audited, record
from workers.operations.published import require_published
from workers.settings import Settings


def _message(args: argparse.Namespace, users: list[uuid.UUID] | None) -> AnalyticsRecompute:
    kind: PeriodKind = args.period
    today = datetime.now(UTC).date()
    last = args.to or today
    first = (
        args.from_
        or period_containing(
            kind,
            period_containing(kind, last).start.fromordinal(
                period_containing(kind, last).start.toordinal() - 1
            ),
        ).start
    )
    if first > last:
        raise InputError(f"--from {first} is after --to {last}")
    return AnalyticsRecompute(period=kind, period_start=first, period_end=last, user_ids=users)


def cmd_recompute(args: argparse.Namespace, settings: Settings) -> int:
    from workers.services.analytics import plan_recompute, recompute

    started = time.monotonic()
    users: list[uuid.UUID] | None = args.user or None
    if args.inline:
        message = _message(args, users)
        with bootstrap.unit_of_work() as uow:
            total_users = len(users) if users else len(uow.users.list_ids())
        columns = (
            TextColumn(f"recompute {message.period}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("users, {task.fields[rows]} rows"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, transient=True, disable=args.quiet) as progress:
            task = progress.add_task("users", total=total_users, rows=0)
            summary = recompute(
                bootstrap.unit_of_work,
                message,
                on_batch=lambda n, rows: progress.update(task, advance=n, rows=rows),
                parallel=args.parallel or settings.analytics_parallelism,
            )
        audited(
            "analytics.recompute",
            target=f"{message.period}:{message.period_start}",
            count=summary.rows,
            detail={"inline": True, "users": summary.users},
        )
        sys.stdout.write(
            f"analytics recompute: period={summary.period} from={summary.first_period} "
            f"to={summary.end} (exclusive) users={summary.users} rows={summary.rows} "
            f"batches={summary.batches} seconds={time.monotonic() - started:.2f}\n"
        )
        return 0
    messages = [
        batch
        for page in plan_recompute(bootstrap.unit_of_work, _message(args, users))
        for batch in page
    ]
    with bootstrap.unit_of_work() as uow:
        for message in messages:
            uow.publish(message)
        first_message = messages[0] if messages else _message(args, None)
        record(
            uow,
            "analytics.recompute",
            target=f"{first_message.period}:{first_message.period_start}",
            count=len(messages),
        )
        uow.commit()
    require_published(uow)
    first = messages[0] if messages else _message(args, None)
    sys.stdout.write(
        f"analytics recompute: published {len(messages)} messages (period={first.period} "
        f"from={first.period_start} to={first.period_end}, "
        f"{sum(len(m.user_ids or []) for m in messages)} users)\n"
    )
    return 0


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from apscheduler.schedulers.background import BackgroundScheduler

    from workers.bootstrap import producer
    from workers.entrypoints.scheduler import FireGuard, build_scheduler, default_jobs
    from workers.messaging.redis_clients import client_for  # Sentinel too

    jobs = default_jobs(settings, producer(), bootstrap.unit_of_work)
    guard = FireGuard(client_for(bootstrap.redis_url(settings)), settings.redis_namespace)
    if args.metrics_port:
        # Its own /metrics (the fires' outcomes and due times: docs/monitoring/).
        from prometheus_client import start_http_server

        try:
            start_http_server(args.metrics_port, addr=settings.metrics_host)
        except OSError as exc:  # the port taken: scheduling matters more than its metrics
            sys.stderr.write(
                f"scheduler: no /metrics on {settings.metrics_host}:{args.metrics_port} "
                f"({exc.strerror}); the fire alerts cannot see this scheduler\n"
            )
    # In a background thread: the main thread only waits for SIGTERM/SIGINT, so a signal
    # at any moment after the handler is installed stops it (PID 1 in a container drops
    # a SIGTERM that has no handler, and elsewhere it would kill without a word).
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    scheduler = build_scheduler(jobs, guard, BackgroundScheduler, stop=stop)
    scheduler.start()
    for job in scheduler.get_jobs():
        sys.stdout.write(f"scheduled {job.id}: {job.trigger}\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    scheduler.shutdown(wait=True)  # a publish under way finishes (milliseconds)
    sys.stdout.write("scheduler stopped\n")
    return 0
