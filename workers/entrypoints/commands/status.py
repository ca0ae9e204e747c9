"""``emotionviz status``: the queues, the workers and the work, at a glance."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from workers.entrypoints.cli_contract import emit_json
from workers.operations.readable import age
from workers.operations.status import collect_status
from workers.settings import Settings

if TYPE_CHECKING:
    from rich.console import Group

NOT_MEASURED = "n/a"  # a number this broker cannot tell (RabbitMQ without its management API)


def _count(value: int | None) -> str:
    return NOT_MEASURED if value is None else str(value)


def render(status: dict[str, Any]) -> Group:
    from rich.console import Group  # rich only where a table is drawn (not for --json)
    from rich.table import Table

    rabbit = status.get("broker") == "rabbitmq"
    queues = Table(title="queues (RabbitMQ: n/a = not readable over AMQP)" if rabbit else "queues")
    columns = ("queue", "ready", "delayed", "in flight", "retrying", "dead", "oldest ready")
    for column in columns:
        queues.add_column(column, justify="left" if column == "queue" else "right")
    for name, q in status["queues"].items():
        queues.add_row(
            name,
            *(_count(q[k]) for k in ("ready", "delayed", "in_flight", "retrying", "dead")),
            NOT_MEASURED if rabbit else age(q["oldest_age_s"]),
        )
    if rabbit:
        consumers = ", ".join(f"{n}: {q.get('consumers', 0)}" for n, q in status["queues"].items())
        title = f"workers alive: n/a on RabbitMQ (consumers per queue: {consumers})"
    else:
        title = f"workers alive: {status['workers_alive']}"
    workers = Table(title=title)
    workers.add_column("worker")
    workers.add_column("last heartbeat", justify="right")
    workers.add_column("holding")
    for w in status["workers"]:
        holding = ", ".join(f"{q}: {n}" for q, n in sorted(w["holding"].items()) if n) or "-"
        workers.add_row(w["worker_id"][:12], f"{w['last_heartbeat_s_ago']} s ago", holding)
    rows = Table(title="visualizations")
    rows.add_column("status")
    rows.add_column("rows", justify="right")
    for state in ("pending", "processing", "failed"):
        rows.add_row(state, str(status["visualizations"].get(state, 0)))
    rows.add_row("stuck past lease", str(status["visualizations_stuck"]))
    for state in ("completed", "failed"):
        finished = status["visualizations_finished_last_hour"].get(state, 0)
        rows.add_row(f"{state}, last hour", str(finished))
    failures = Table(title="failures, last hour")
    failures.add_column("class")
    failures.add_column("rows", justify="right")
    for cls, number in status["failures_last_hour"].items() or [("none", 0)]:
        failures.add_row(cls, str(number))
    intake = Table(title="intake sessions, open")
    intake.add_column("state")
    intake.add_column("sessions", justify="right")
    for state, number in status["intake_sessions"].items():
        intake.add_row(state.replace("_", " "), str(number))
    parts = [queues, workers, rows, failures, intake]
    seen = status.get("redis_failover")
    if seen:  # REDIS_URL=redis+sentinel:// (issue 22.1)
        failover = Table(title="last Redis failover")
        for column in ("seen", "primary", "no primary for", "republished"):
            failover.add_column(column)
        done = str(seen.get("republished", "-")) if seen.get("reconciled") else "NOT RECONCILED"
        failover.add_row(
            f"{age(time.time() - float(seen['seen_at']))} ago",
            f"{seen['old']} -> {seen['new']}",
            f"{seen['no_primary_s']} s",
            done,
        )
        parts.append(failover)
    paused = status.get("paused_queues")
    if paused:  # emotionviz queue pause (issue 24.3)
        table = Table(title="paused queues (workers take none of their messages)")
        for column in ("queue", "paused for", "by", "reason"):
            table.add_column(column)
        for p in paused:
            table.add_row(p["queue"], age(p["paused_s"]), p["paused_by"], p["reason"] or "-")
        parts.append(table)
    paid = status.get("paid_calls_today")
    if paid:  # the paid-call ledger (issue 23.3)
        budget = paid["user_daily_budget_usd"]
        shown = f"${budget} per person" if budget else "off"
        table = Table(title=f"paid calls today (UTC), daily budget {shown}")
        for column in ("calls", "est. cost USD", "people", "rows waiting on a budget"):
            table.add_column(column, justify="right")
        table.add_row(
            str(paid["calls"]),
            paid["cost_usd"],
            str(paid["people"]),
            str(paid["waiting_on_budget"]),
        )
        parts.append(table)
    refresh = status.get("analytics_refresh")
    if refresh:  # the worker processes' analytics refresher
        table = Table(title="analytics refresh queue (the workers drain it)")
        for column in ("queued", "oldest", "state"):
            table.add_column(column, justify="right")
        oldest = refresh["oldest_age_s"]
        table.add_row(
            str(refresh["queued"]),
            "-" if oldest is None else age(oldest),
            "BEHIND: is any worker running?" if refresh["behind"] else "ok",
        )
        parts.append(table)
    return Group(*parts)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    if args.watch:
        from rich.live import Live

        with Live(render(collect_status(settings)), refresh_per_second=1) as live:
            while True:
                time.sleep(args.interval)
                live.update(render(collect_status(settings)))
    status = collect_status(settings)
    if args.json:
        emit_json(status)
    elif not args.quiet:
        from rich.console import Console

        Console().print(render(status))
    return 0
