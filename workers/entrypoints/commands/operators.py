"""``emotionviz operator add|list|revoke`` and ``emotionviz audit`` (issue 24.4)."""

from __future__ import annotations

import argparse
from datetime import datetime

from domain.moments import parse_moment
from workers.entrypoints.cli_contract import InputError, emit_json, out
from workers.operations.operators import (
    action_dict,
    add_operator,
    describe,
    list_operators,
    revoke_operator,
    trail,
)
from workers.settings import Settings


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    made = add_operator(args.name, args.scope)
    if args.json:
        emit_json({**describe(made.operator), "token": made.token})
        return 0
    out(f"operator {made.operator.name} ({made.operator.scope}) added; their token, shown once:")
    out(made.token)
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = list_operators(include_revoked=args.all)
    if args.json:
        emit_json([describe(row) for row in rows])
        return 0
    if not rows:
        out("no operators (emotionviz operator add NAME --scope read|write)")
    for row in rows:
        revoked = f"  revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else ""
        out(
            f"{row.name:<24} {row.scope:<5}  added {row.created_at:%Y-%m-%d %H:%M} "
            f"by {row.created_by}{revoked}"
        )
    return 0


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    row = revoke_operator(args.name)
    if args.json:
        emit_json(describe(row))
    else:
        out(f"operator {row.name}'s token revoked")
    return 0


def since_of(value: str | None) -> datetime | None:
    """An age (24h) back from now, or an ISO 8601 time (UTC unless it says): the one
    parser of moments, domain/moments.py (an empty value is refused)."""
    return None if value is None else parse_moment(value, "--since")


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    for option, value in (("--operator", args.operator), ("--action", args.action)):
        if value is not None and not value.strip():
            raise InputError(f"{option}: empty (give a value, or leave the option out)")
    rows = trail(
        since=since_of(args.since), operator=args.operator, action=args.action, limit=args.limit
    )
    if args.json:
        emit_json([action_dict(row) for row in rows])
        return 0
    if not rows:
        out("no operator actions (matching the filters)")
    for row in rows:
        count = "" if row.count is None else f"  count={row.count}"
        target = f"  {row.target}" if row.target else ""
        when = f"{row.at:%Y-%m-%d %H:%M:%S}"
        out(f"{when}  {row.operator}  [{row.source}]  {row.action}{target}{count}")
    return 0
