"""``emotionviz usage``: the paid-call ledger by person, UTC day or model."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from rich.console import Console
from rich.table import Table

from domain.ledger import usd
from domain.moments import parse_moment
from workers.entrypoints.cli_contract import InputError, emit_json
from workers.operations.usage import UsageReport, usage_report
from workers.settings import Settings


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
    # The one parser of moments (domain/moments.py); an empty value is refused, not
    # taken for the default.
    since = now - timedelta(days=7)
    if args.since is not None:
        since = parse_moment(args.since, "--since", now)
    until = parse_moment(args.until, "--until", now) if args.until is not None else now
    if since >= until:
        raise InputError(f"--since ({since:%Y-%m-%d %H:%M}) is not before --until")
    report = usage_report(args.by, since, until)
    if args.json:
        emit_json(report.as_dict())
    else:
        Console().print(render(report))
    return 0
