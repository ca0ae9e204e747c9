"""``emotionviz media gc``: remove pictures no visualization row references."""

from __future__ import annotations

import argparse

from workers import bootstrap
from workers.entrypoints.cli_contract import emit_json, out
from workers.operations.audit import audited
from workers.settings import Settings


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    report = bootstrap.media_lifecycle().gc(apply=args.apply, min_age_s=args.min_age)
    if args.apply:
        audited("media.gc", count=report.files_deleted, detail={"orphans": len(report.orphans)})
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
