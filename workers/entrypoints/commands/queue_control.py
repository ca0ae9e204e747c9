"""``emotionviz queue pause|resume|list`` (issue 24.3; workers/operations/pauses.py)."""

from __future__ import annotations

import argparse

from workers.entrypoints.cli_contract import emit_json, out
from workers.operations.pauses import pause_queue, paused_queues, resume_queue
from workers.operations.readable import age
from workers.settings import Settings


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    pause = pause_queue(args.name, reason=args.reason)
    if args.json:
        emit_json(pause.as_dict())
    else:
        out(f"queue {pause.queue} paused: workers take none of its messages until resumed")
    return 0


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    pause = resume_queue(args.name)
    if args.json:
        emit_json({**pause.as_dict(), "resumed": True})
    else:
        out(f"queue {pause.queue} resumed after {age(pause.paused_s)}")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    pauses = paused_queues()
    if args.json:
        emit_json([pause.as_dict() for pause in pauses])
        return 0
    if not pauses:
        out("no queue is paused")
    for pause in pauses:
        reason = f": {pause.reason}" if pause.reason else ""
        out(f"{pause.queue} paused {age(pause.paused_s)} ago by {pause.paused_by}{reason}")
    return 0
