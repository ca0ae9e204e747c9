"""Commands on individual jobs: enqueue, replay, reconcile, and ``job`` (one job's life)."""

from __future__ import annotations

import argparse
from typing import Any

from domain.errors import NotFoundError
from domain.intake import next_step, parse_history
from domain.messages import EntryCreated, IntakeStep, MessageV1
from domain.vocabulary import VisualizationStyle
from workers import bootstrap, producer_api
from workers.entrypoints.cli_contract import emit_json, out
from workers.operations.jobs import entry_life, replay_failed, session_life
from workers.settings import Settings


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    message: MessageV1
    with bootstrap.unit_of_work() as uow:
        if args.kind == "entry":
            entry = uow.entries.get(args.id)
            if entry is None:
                raise NotFoundError(f"entry {args.id} does not exist")
            message = EntryCreated(
                entry_id=args.id,
                user_id=entry.user_id,
                style=VisualizationStyle(args.style) if args.style else None,
            )
        else:
            session = uow.intake.get(args.id)
            if session is None:
                raise NotFoundError(f"intake session {args.id} does not exist")
            step = args.step or next_step(parse_history(session.conversation_history))
            message = IntakeStep(session_id=args.id, user_id=session.user_id, step=step)
        uow.publish(message)
        uow.commit()
    what = (
        f"intake step {message.step} of session {args.id}"
        if isinstance(message, IntakeStep)
        else f"the request for entry {args.id}"
    )
    # The producer API's error (exit 1, one line): what is saved, and when the
    # reconciler publishes it again.
    producer_api.require_published(
        uow, what, saved_id=args.id, reconcile_grace_s=settings.reconcile_grace_s
    )
    message_id = uow.published_ids[0]
    if args.json:
        emit_json({"actor": message.actor_name, "message_id": message_id})
    else:
        out(f"published {message.actor_name} {message_id}")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    replayed = replay_failed(args.entry_ids or None)
    if args.json:
        emit_json({"replayed": [str(entry_id) for entry_id in replayed]})
    else:
        out(f"replayed {len(replayed)} failed visualizations")
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    report = bootstrap.run_reconcile()
    if args.json:
        emit_json(report.summary())
    elif report.skipped:
        out("reconcile: another reconcile is running (on this or another machine); nothing done")
    else:
        out(
            f"reconcile: republished {report.unfinished} unfinished and {report.stuck} stuck "
            f"entries ({report.adopted} of them had no visualization row), "
            f"{report.intake} lost intake steps"
        )
    return 0


# --- job: one job's life (workers/operations/jobs.py) -------------------------------


def _print_life(life: dict[str, Any]) -> None:
    for key, value in life.items():
        if key == "messages":
            continue
        if isinstance(value, dict):
            out(f"{key}:")
            for inner, item in value.items():
                if item is not None:
                    out(f"  {inner:24} {item}")
        elif value is not None:
            out(f"{key:26} {value}")
    if not life["messages"]:
        out("message                    nowhere in the broker (done, or lost: reconcile)")
    for message in life["messages"]:
        line = f"message {message['message_id']}: {message['where']}"
        line += f", {message['retries']} retries" if message["retries"] else ""
        out(line + (f" ({message['error']})" if message["error"] else ""))


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    if args.session:
        life = session_life(settings, args.session)
    elif args.entry_id:
        life = entry_life(settings, args.entry_id)
    else:
        from workers.entrypoints.cli_contract import InputError

        raise InputError("give an ENTRY_ID, or --session ID")
    if args.json:
        emit_json(life)
    else:
        _print_life(life)
    return 0
