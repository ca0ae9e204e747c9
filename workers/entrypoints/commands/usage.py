"""``emotionviz usage``: the paid-call ledger by person, UTC day or model."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from domain.ledger import usd
from workers.entrypoints.cli_contract import InputError, age_arg, emit_json
from workers.operations.usage import UsageReport, usage_report
from workers.settings import Settings


def moment_arg(option: str, value: str, now: datetime) -> datetime:
    """An age (30m, 2h, 7d: that long ago), a date (its 00:00 UTC) or an ISO time
    (UTC unless it names its offset)."""
    try:
        return now - timedelta(seconds=age_arg(value))
    except argparse.ArgumentTypeError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{option}: not an age (7d), a date (2026-12-01) or an ISO time: {value[:40]!r}"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def render(report: UsageReport) -> Table:
    span = f"{report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC"
    table = Table(title=f"paid calls by {report.by}, {span}")
    for column in (report.by, "calls", "failed", "input tokens", "output tokens", "images"):
        table.add_column(column, justify="left" if column == report.by else "right")
    table.add_column("est. cost", justify="right")
    for row in [*report.rows, report.totals]:
        table.add_row(
            row.key,
            str(row.calls),
            str(row.failed),
            str(row.input_tokens),
            str(row.output_tokens),
            str(row.images),
            usd(row.cost_usd),
        )
    return table


def cmd_usage(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    since = moment_arg("--since", args.since, now) if args.since else now - timedelta(days=7)
    until = moment_arg("--until", args.until, now) if args.until else now
    if since >= until:
        raise InputError(f"--since ({since:%Y-%m-%d %H:%M}) is not before --until")
    report = usage_report(args.by, since, until)
    if args.json:
        emit_json(report.as_dict())
    else:
        Console().print(render(report))
    return 0
