"""``emotionviz media gc``: remove pictures no visualization row references."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from workers import bootstrap
from workers.entrypoints.cli_contract import emit_json, out
from workers.services.media import ORPHAN_MIN_AGE_S
from workers.settings import Settings


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    report = bootstrap.media_lifecycle().gc(apply=args.apply, min_age_s=args.min_age)
    if args.json:
        emit_json({**report.as_dict(), "orphan_keys": report.orphans[:1000]})
        return 0
    if args.apply:
        out(
            f"media gc: {report.files_deleted} files deleted ({len(report.orphans)} orphans, "
            f"{report.garbage_rows} deleted visualizations)"
        )
    else:
        for key in report.orphans[:50]:
            out(f"orphan: {key}")
        more = " (first 50 listed)" if len(report.orphans) > 50 else ""
        out(f"media gc (dry run): {len(report.orphans)} orphaned files{more}; --apply deletes them")
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("media", lambda a, s: a.subhandler(a, s), "stored pictures")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    gc = sub.add_parser(
        "gc",
        help="find pictures no row references (dry run unless --apply)",
        description="Find, and with --apply delete, stored pictures that no visualization "
        "row references (and the files of deleted visualizations).",
    )
    gc.set_defaults(subhandler=cmd_gc)
    gc.add_argument("--apply", action="store_true", help="delete them (default: only list)")
    gc.add_argument(
        "--min-age",
        type=float,
        default=ORPHAN_MIN_AGE_S,
        metavar="S",
        help=f"leave files younger than this alone (default {ORPHAN_MIN_AGE_S:.0f})",
    )
    gc.add_argument("--json", action="store_true", help="machine-readable output")
