"""``emotionviz user erase|log-ref`` and ``emotionviz retention run``: a person who
leaves, erased in one step with a report per store; the scheduled purge run by hand
(the use cases: workers/operations/erase.py, retention.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from domain.errors import EmotionVizError
from workers.entrypoints.cli_contract import InputError, emit_json, out
from workers.operations.erase import ErasureReport, erase_person, log_reference
from workers.operations.retention import run_and_audit
from workers.settings import Settings


def _print_report(report: ErasureReport) -> None:
    verb = "erased" if report.applied else "would erase"
    data = report.as_dict()
    rows = data["postgresql"]
    out(
        f"person {report.ref}: {verb}"
        + (" (already erased before)" if report.already_erased else "")
    )
    out(f"  postgresql: {rows['total']} rows")
    for table, count in rows["rows"].items():
        if count:
            out(f"    {table:24} {count}")
    media = data["media"]
    if report.applied:
        out(
            f"  media ({media.get('store')}): {media.get('files_deleted', 0)} files deleted, "
            f"{media.get('garbage_rows', 0)} garbage rows"
        )
    else:
        out(
            f"  media ({media.get('store')}): the pictures of "
            f"{media.get('visualizations', 0)} visualizations"
        )
    redis = data["redis"]
    out(
        f"  redis: {redis.get('messages', 0)} messages, {redis.get('other_keys', 0)} keys, "
        f"{redis.get('other_values', 0)} other values"
    )
    if report.rabbitmq:
        out(f"  rabbitmq: {report.rabbitmq}")


def _confirmed(report: ErasureReport) -> bool:
    if not sys.stdin.isatty():
        return False
    sys.stderr.write(f"Erase person {report.ref} for good? Type 'erase' to confirm: ")
    sys.stderr.flush()
    return sys.stdin.readline().strip() == "erase"


def cmd_erase(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        preview = erase_person(settings, args.id, apply=False)
        if args.json:
            emit_json(preview.as_dict())
        else:
            _print_report(preview)
        if not sys.stdin.isatty() or args.json:
            raise InputError("erasing a person cannot be undone: confirm with --yes")
        if not _confirmed(preview):
            raise EmotionVizError("not confirmed: nothing was changed")
    report = erase_person(settings, args.id, apply=True)
    if args.json:
        emit_json(report.as_dict())
    else:
        _print_report(report)
    return 0


def cmd_log_ref(args: argparse.Namespace, settings: Settings) -> int:
    ref = log_reference(args.id)
    if args.json:
        emit_json({"id": str(args.id), "log_ref": ref})
    else:
        out(ref)
    return 0


def cmd_retention(args: argparse.Namespace, settings: Settings) -> int:
    report = run_and_audit(settings, dry_run=args.dry_run)
    if args.json:
        emit_json(report.as_dict())
        return 0
    verb = "would purge" if args.dry_run else "purged"
    for kind, data in report.kinds.items():
        kept: Any = data.get("kept")
        if kept:
            out(f"{kind:18} kept {kept} (retention off)")
        else:
            out(f"{kind:18} {verb} {data['rows']} rows older than {data['days']:g} days")
    if not args.dry_run:
        out(f"dead letters of purged failed rows: {report.dead_letters}")
    out(f"retention: {report.total} rows {verb}")
    return 0
