"""``emotionviz dlq``: dead-lettered messages: list, show, retry (replay), purge."""

from __future__ import annotations

import argparse
import json

from domain.errors import NotFoundError
from workers import bootstrap
from workers.entrypoints.cli_contract import InputError, emit_json, out
from workers.operations.audit import audited
from workers.operations.dead_letters import readable_dead_letters, retry_dead_letters
from workers.settings import Settings


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    letters = readable_dead_letters(settings).entries(
        args.queue,
        limit=args.limit,
        actor=args.actor,
        older_than_s=args.older_than,
        newer_than_s=args.newer_than,
    )
    if args.json:
        emit_json([letter.summary() for letter in letters])
        return 0
    if not letters:
        out(f"no dead letters on {args.queue} (matching the filters)")
        return 0
    for letter in letters:
        row = letter.summary()
        out(f"{row['dead_at']}  {row['message_id']}  {row['actor']}  retries={row['retries']}")
        out(f"    args: {row['args']}")
        if row["error"]:
            out(f"    error: {row['error']}")
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    letter = readable_dead_letters(settings).get(args.queue, args.id)
    if letter is None:
        raise NotFoundError(f"no dead letter {args.id} on {args.queue}")
    if args.json:
        emit_json({**letter.summary(), "body": letter.body})
    else:
        out(json.dumps(letter.body, indent=2, default=str))
    return 0


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    ids = [*args.ids, *(args.ids_opt or [])]
    everything = args.all or (args.action == "replay" and not ids)  # replay's first meaning
    if not ids and not everything:
        raise InputError("name the message ids to retry, or --all")
    moved = retry_dead_letters(settings, args.queue, None if everything else ids)
    audited(f"dlq.{args.action}", target=args.queue, count=len(moved))
    if args.json:
        emit_json({"retried": [letter.message_id for letter in moved]})
    else:
        out(f"retried {len(moved)} dead-lettered messages on {args.queue}")
    return 0


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        raise InputError(f"purge deletes every dead letter on {args.queue}: add --yes to confirm")
    amqp = bootstrap.rabbitmq_url(settings)
    if amqp is not None:
        from workers.messaging.rabbitmq_state import purge_dead_letters  # the rabbitmq extra

        removed = purge_dead_letters(amqp, args.queue)
    else:
        removed = readable_dead_letters(settings).purge(args.queue)
    audited("dlq.purge", target=args.queue, count=removed)
    if args.json:
        emit_json({"purged": removed})
    else:
        out(f"purged {removed} dead-lettered messages on {args.queue}")
    return 0
