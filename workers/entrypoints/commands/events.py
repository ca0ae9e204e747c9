"""``emotionviz events list|replay``: the completion events' deliveries to the
subscribers (docs/messages.md, "Completion events"): what is pending, delivered or
dead with its reason, and sending dead ones (or named events) again."""

from __future__ import annotations

import argparse
from typing import Any

from db.repositories.events import DeliveryRow
from workers import bootstrap
from workers.entrypoints.cli_contract import InputError, emit_json, out
from workers.operations.audit import audited
from workers.services.events import list_deliveries, replay_deliveries
from workers.settings import Settings


def _row(row: DeliveryRow) -> dict[str, Any]:
    return {
        "event_id": str(row.event_id),
        "type": row.kind,
        "data": row.payload,
        "created_at": row.created_at.isoformat(),
        "subscriber": row.subscriber,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.status == "pending" else None,
        "last_error": row.last_error,
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows, counts = list_deliveries(
        bootstrap.unit_of_work,
        status=args.status,
        event_ids=args.event or (),
        limit=args.limit,
    )
    if args.json:
        emit_json({"counts": counts, "deliveries": [_row(r) for r in rows]})
        return 0
    for r in rows:
        subject = r.payload.get("entry_id") or r.payload.get("session_id")
        reason = f"  {r.last_error}" if r.status != "delivered" and r.last_error else ""
        out(
            f"{r.event_id}  {r.kind:23} {r.subscriber:7} {r.status:9} "
            f"attempts={r.attempts} {subject}{reason}"
        )
    out(
        f"events: {counts['pending']} pending, {counts['delivered']} delivered, "
        f"{counts['dead']} dead deliveries"
    )
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    count, unknown = replay_deliveries(
        bootstrap.unit_of_work, event_ids=args.event_ids, subscriber=args.subscriber
    )
    if unknown:
        more = " ..." if len(unknown) > 3 else ""
        raise InputError(
            f"no such event: {', '.join(str(i) for i in unknown[:3])}{more} (nothing replayed)"
        )
    audited(
        "events.replay",
        target=args.subscriber,
        count=count,
        detail={"events": [str(i) for i in args.event_ids[:100]]} if args.event_ids else None,
    )
    if args.json:
        emit_json({"replayed": count})
    else:
        what = "of the given events" if args.event_ids else "dead"
        out(f"events replay: {count} {what} deliveries sent again")
    return 0
