"""``emotionviz dlq``: dead-lettered messages: list, show, retry (replay), purge."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from domain.errors import NotFoundError
from domain.messages import QUEUES, EntryCreated
from workers import bootstrap
from workers.entrypoints.cli_contract import InputError, emit_json, out, positive_int
from workers.operations.dead_letters import readable_dead_letters, retry_dead_letters
from workers.settings import Settings


def _age(value: str) -> float:
    """30s, 15m, 2h, 7d -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return float(value[:-1]) * units[value[-1]] if value[-1] in units else float(value)
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(f"not an age like 30s, 15m, 2h, 7d: {value!r}") from None


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
    if args.json:
        emit_json({"purged": removed})
    else:
        out(f"purged {removed} dead-lettered messages on {args.queue}")
    return 0


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add("dlq", lambda a, s: a.subhandler(a, s), "dead-lettered messages")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help_text, description=help_text)
        a.set_defaults(subhandler=handler)
        a.add_argument("--queue", default=EntryCreated.queue_name, choices=QUEUES)
        a.add_argument("--json", action="store_true", help="machine-readable output")
        return a

    a = action("list", cmd_list, "newest first, with the reason")
    a.add_argument("--limit", type=positive_int, default=50)
    a.add_argument("--actor", help="only this actor (e.g. entry.created)")
    a.add_argument("--older-than", type=_age, metavar="AGE", help="e.g. 1h, 2d")
    a.add_argument("--newer-than", type=_age, metavar="AGE", help="e.g. 15m")
    a = action("show", cmd_show, "one dead letter's whole body")
    a.add_argument("id", help="message id (or Redis id)")
    for name in ("retry", "replay"):  # 'replay' is the first name, kept for scripts
        a = action(name, cmd_retry, "back to the queue; failed rows they name back to pending")
        a.add_argument("ids", nargs="*", help="message ids (or Redis ids)")
        a.add_argument("--ids", dest="ids_opt", nargs="*", help=argparse.SUPPRESS)
        a.add_argument("--all", action="store_true", help="every dead letter of the queue")
    a = action("purge", cmd_purge, "delete every dead letter of the queue")
    a.add_argument("--yes", action="store_true", help="confirm")
