"""The CLI's subcommands: the registry the parser is built from.

Each command is declared here (name, help, arguments) and runs a handler,
``cmd_x(args, settings) -> int``, in a module of this package named by ``lazy``: the
module is imported when its command runs, never to build the parser. So this file
imports nothing heavy (no SQLAlchemy, Dramatiq, Redis, the model SDK, Pillow, not even
the settings): ``emotionviz --help`` and a command's ``--help`` answer at once
(tests/integration/test_cli_fast.py checks what they import; scripts/bench_cli.py
times them). Values an argument shows that live in heavy modules (the queue names, a
default) are repeated here; test_cli_fast.py checks they still agree.

A new command: its handlers in a module of this package (importing what they need),
a ``_name(add)`` function here declaring the command with ``lazy("module",
"cmd_x")`` as its handler, and that function in ``REGISTRARS``. cli.py holds the
set-up commands (services, migrate, seed, backup, restore); the other rooms' commands
(console, devtools) come through workers/command_rooms.py, with the same ``add``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from domain.vocabulary import VisualizationStyle
from workers.entrypoints.cli_contract import (
    age_arg,
    iso_date,
    non_negative_int,
    positive_int,
    seconds_arg,
    uuid_arg,
)

if TYPE_CHECKING:
    from workers.settings import Settings

Handler = Callable[[argparse.Namespace, "Settings"], int]
# add(name, handler, help): a subcommand's parser (handler None: a group of actions)
Add = Callable[[str, Handler | None, str], argparse.ArgumentParser]

# Mirrors of values that live in heavy modules (checked equal by test_cli_fast.py).
QUEUES = ("visualizations", "intake", "analytics", "maintenance")  # domain.messages.QUEUES
DEFAULT_QUEUE = "visualizations"  # EntryCreated.queue_name
ORPHAN_MIN_AGE_S = 3600.0  # workers.services.media
INTAKE_PROCESSES = 1  # workers.observability.connection_budget
INTAKE_THREADS = 16  # workers.observability.connection_budget

JSON_HELP = "machine-readable output"


@dataclass(frozen=True)
class Lazy:
    """A handler by name: its module is imported when the command runs (inside main's
    error handling, so a module that cannot load is one line, not a traceback)."""

    module: str
    function: str

    def __call__(self, args: argparse.Namespace, settings: Settings) -> int:
        handler = getattr(importlib.import_module(self.module), self.function)
        return int(handler(args, settings))


def lazy(module: str, function: str) -> Lazy:
    """``function`` of workers/entrypoints/commands/``module``.py."""
    return Lazy(f"{__name__}.{module}", function)


def _actions(parser: argparse.ArgumentParser, dest: str) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    return parser.add_subparsers(dest=dest, required=True, metavar="ACTION")


def _action(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    name: str,
    handler: Handler,
    help_text: str,
    description: str | None = None,
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=description or help_text
    )
    p.set_defaults(handler=handler)
    return p


# --- the commands ---------------------------------------------------------------------


def _worker(add: Add) -> None:
    p = add(
        "worker",
        lazy("worker", "cmd_worker"),
        "run Dramatiq worker processes (WORKER_PROCESSES x WORKER_THREADS)",
    )
    p.add_argument("--processes", type=positive_int, help="default WORKER_PROCESSES")
    p.add_argument("--threads", type=positive_int, help="default WORKER_THREADS")
    p.add_argument("--queues", nargs="+", choices=QUEUES, help="only these queues (default all)")
    p.add_argument(
        "--schema-wait",
        type=float,
        default=60.0,
        metavar="S",
        help="wait this long for 'emotionviz migrate' to bring the schema to head (default 60)",
    )


def _jobs(add: Add) -> None:
    p = add(
        "enqueue",
        lazy("jobs", "cmd_enqueue"),
        "publish a message for an existing row (operators, replays)",
    )
    p.add_argument("kind", choices=["entry", "intake"])
    p.add_argument("id", type=uuid_arg, help="emotion entry id, or intake session id")
    p.add_argument("--style", choices=[s.value for s in VisualizationStyle])
    p.add_argument(
        "--step",
        type=positive_int,
        help="intake turn to produce (default: the one the session is waiting for)",
    )
    p.add_argument(
        "--redraw",
        action="store_true",
        help="draw a completed entry again (in --style), reusing its analysis",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = add(
        "replay",
        lazy("jobs", "cmd_replay"),
        "set failed visualizations back to pending and publish them",
    )
    p.add_argument(
        "entry_ids", nargs="*", type=uuid_arg, help="only these entries (default: every failed)"
    )
    # The bulk replay (issue 24.2; workers/operations/job_search.py): filters, a plan
    # first, batches of one transaction each.
    _job_filters(p, status=False)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="only count the matching failed rows by class and the paid model calls",
    )
    p.add_argument(
        "--batch",
        type=positive_int,
        default=REPLAY_BATCH,
        metavar="N",
        help=f"rows per transaction (default {REPLAY_BATCH}); a rerun resumes",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = add(
        "reconcile",
        lazy("jobs", "cmd_reconcile"),
        "republish work the database says is unfinished or stuck",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)

    p = add(
        "job",
        lazy("jobs", "cmd_job"),
        "one job's life: its row, times, last error, where its message is",
    )
    p.add_argument("entry_id", nargs="?", type=uuid_arg, help="an emotion entry id")
    p.add_argument("--session", type=uuid_arg, metavar="ID", help="an intake session instead")
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def _status(add: Add) -> None:
    p = add(
        "status",
        lazy("status", "cmd_status"),
        "queues, workers, visualization states and recent failures",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--json", action="store_true", help=JSON_HELP)
    mode.add_argument(
        "--quiet", action="store_true", help="no output; exit 0 if reachable, 1 if not"
    )
    mode.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument(
        "--interval", type=positive_int, default=2, metavar="S", help="--watch refresh (s)"
    )


def _dlq(add: Add) -> None:
    sub = _actions(add("dlq", None, "dead-lettered messages"), "action")

    def action(name: str, function: str, help_text: str) -> argparse.ArgumentParser:
        a = _action(sub, name, lazy("dlq", function), help_text)
        a.add_argument("--queue", default=DEFAULT_QUEUE, choices=QUEUES)
        a.add_argument("--json", action="store_true", help=JSON_HELP)
        return a

    a = action("list", "cmd_list", "newest first, with the reason")
    a.add_argument("--limit", type=positive_int, default=50)
    a.add_argument("--actor", help="only this actor (e.g. entry.created)")
    a.add_argument("--older-than", type=age_arg, metavar="AGE", help="e.g. 1h, 2d")
    a.add_argument("--newer-than", type=age_arg, metavar="AGE", help="e.g. 15m")
    a = action("show", "cmd_show", "one dead letter's whole body")
    a.add_argument("id", help="message id (or Redis id)")
    for name in ("retry", "replay"):  # 'replay' is the first name, kept for scripts
        a = action(name, "cmd_retry", "back to the queue; failed rows they name back to pending")
        a.add_argument("ids", nargs="*", help="message ids (or Redis ids)")
        a.add_argument("--ids", dest="ids_opt", nargs="*", help=argparse.SUPPRESS)
        a.add_argument("--all", action="store_true", help="every dead letter of the queue")
    a = action("purge", "cmd_purge", "delete every dead letter of the queue")
    a.add_argument("--yes", action="store_true", help="confirm")


def _analytics(add: Add) -> None:
    sub = _actions(add("analytics", None, "emotion_analytics maintenance"), "analytics_command")
    r = _action(
        sub,
        "recompute",
        lazy("analytics", "cmd_recompute"),
        "recompute emotion_analytics for a period kind and range",
        "Recompute emotion_analytics (UTC periods). Default: publish "
        "analytics.recompute messages, one per batch of users, for the workers; "
        "--inline computes here with a progress bar. Default range: the previous "
        "and the current period. Exit code 0 on success, 1 on failure, 2 on "
        "bad arguments or configuration (so cron can alert).",
    )
    r.add_argument("--period", choices=["day", "week", "month"], required=True)
    r.add_argument(
        "--from",
        dest="from_",
        type=iso_date,
        metavar="DATE",
        help="first day (its whole period is recomputed)",
    )
    r.add_argument("--to", type=iso_date, metavar="DATE", help="last day (default today, UTC)")
    r.add_argument(
        "--user", action="append", type=uuid_arg, metavar="ID", help="only this user (repeatable)"
    )
    r.add_argument("--inline", action="store_true", help="compute in this process")
    r.add_argument(
        "--parallel",
        type=positive_int,
        metavar="N",
        help="with --inline: batches at a time, one connection each "
        "(default ANALYTICS_PARALLELISM)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    s = add(
        "scheduler",
        lazy("analytics", "cmd_scheduler"),
        "publish analytics.recompute and reconcile messages on SCHEDULE_* cron settings",
    )
    s.add_argument(
        "--metrics-port",
        type=int,
        default=9192,
        metavar="PORT",
        help="serve the scheduler's /metrics on METRICS_HOST:PORT (default 9192; 0: off)",
    )


def _media(add: Add) -> None:
    sub = _actions(add("media", None, "stored pictures"), "action")
    gc = _action(
        sub,
        "gc",
        lazy("media", "cmd_gc"),
        "find pictures no row references (dry run unless --apply)",
        "Find, and with --apply delete, stored pictures that no visualization "
        "row references (and the files of deleted visualizations).",
    )
    gc.add_argument("--apply", action="store_true", help="delete them (default: only list)")
    gc.add_argument(
        "--min-age",
        type=float,
        default=ORPHAN_MIN_AGE_S,
        metavar="S",
        help=f"leave files younger than this alone (default {ORPHAN_MIN_AGE_S:.0f})",
    )
    gc.add_argument("--json", action="store_true", help=JSON_HELP)


def _health(add: Add) -> None:
    p = add(
        "health",
        lazy("health", "cmd_health"),
        "exit 0 if the database and broker answer and the schema is at head, else 1 "
        "with one line naming what failed (container health checks)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument(
        "--worker",
        action="store_true",
        help="also this machine's worker: its /healthz on METRICS_PORT (worker containers)",
    )
    p.add_argument(
        "--console",
        action="store_true",
        help="only this machine's console: its /healthz on CONSOLE_PORT (console container)",
    )
    p.add_argument(
        "--timeout",
        type=seconds_arg,
        default=3.0,
        metavar="S",
        help="seconds each check may take (default 3)",
    )


def _doctor(add: Add) -> None:
    p = add(
        "doctor",
        lazy("doctor", "cmd_doctor"),
        "the PostgreSQL and Redis connections each service opens at rest and at peak for "
        "N machines, against the servers' max_connections and maxclients: exit 0 when "
        "they fit, 1 when not",
    )
    p.add_argument(
        "--machines", type=positive_int, default=1, metavar="N", help="machines (default 1)"
    )
    p.add_argument(
        "--intake-processes",
        type=non_negative_int,
        default=INTAKE_PROCESSES,
        metavar="N",
        help=f"intake worker processes per machine (default {INTAKE_PROCESSES}; 0: none)",
    )
    p.add_argument(
        "--intake-threads",
        type=positive_int,
        default=INTAKE_THREADS,
        metavar="N",
        help=f"threads of each intake worker process (default {INTAKE_THREADS})",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def _events(add: Add) -> None:
    sub = _actions(
        add("events", None, "completion events: their deliveries to subscribers"), "action"
    )
    a = _action(
        sub, "list", lazy("events", "cmd_list"), "deliveries, newest first, and each state's count"
    )
    a.add_argument("--status", choices=["pending", "delivered", "dead"])
    a.add_argument(
        "--event", action="append", type=uuid_arg, metavar="ID", help="only this event (repeatable)"
    )
    a.add_argument("--limit", type=positive_int, default=50)
    a.add_argument("--json", action="store_true", help=JSON_HELP)
    a = _action(
        sub,
        "replay",
        lazy("events", "cmd_replay"),
        "send again: every dead delivery, or every delivery of the given events",
    )
    a.add_argument("event_ids", nargs="*", type=uuid_arg, help="event ids (default: every dead)")
    a.add_argument("--subscriber", choices=["queue", "webhook"], help="only this subscriber")
    a.add_argument("--json", action="store_true", help=JSON_HELP)


# --- commands being added (each function is its own issue's; filled in place) -------


def _usage(add: Add) -> None:
    """emotionviz usage (issue 23.3)."""
    p = add(
        "usage",
        lazy("usage", "cmd_usage"),
        "paid model calls, tokens and estimated cost, by person, UTC day or model",
    )
    p.add_argument("--by", choices=["user", "day", "model"], default="user", help="group by")
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="an age (7d, 12h), a date (2026-12-01, from 00:00 UTC) or an ISO time (default: 7d)",
    )
    p.add_argument(
        "--until", metavar="WHEN", help="the end, excluded, in the same forms (default: now)"
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)


# Mirrors for jobs list and replay (issue 24.1-24.2; workers.operations.job_search;
# checked equal by tests/integration/test_job_search_cli.py).
FAILURE_CLASSES = (  # domain.failures: every class, then OTHER
    "crash_loop",
    "rate_limited",
    "safety",
    "timeout",
    "server_error",
    "invalid_output",
    "configuration",
    "request_rejected",
    "database",
    "not_found",
    "gave_up",
    "other",
)
VISUALIZATION_STATUSES = ("pending", "processing", "completed", "failed")  # VisualizationStatus
JOBS_PAGE = 50  # job_search.DEFAULT_LIMIT
REPLAY_BATCH = 500  # job_search.DEFAULT_BATCH


def _job_search(add: Add) -> None:
    """emotionviz jobs list (issue 24.1); the bulk replay's flags live on 'replay'."""
    sub = _actions(
        add("jobs", None, "find jobs (visualizations) by person, status, class"), "action"
    )
    a = _action(
        sub,
        "list",
        lazy("jobs", "cmd_jobs_list"),
        "jobs newest first, a page at a time (--after the printed cursor)",
    )
    _job_filters(a, status=True)
    a.add_argument(
        "--older-than", metavar="AGE", help="created at least this long ago (e.g. 10m, 2h, 7d)"
    )
    a.add_argument("--limit", type=positive_int, default=JOBS_PAGE, metavar="N")
    a.add_argument("--after", metavar="CURSOR", help="the next page: the cursor a page printed")
    a.add_argument("--json", action="store_true", help=JSON_HELP)


def _job_filters(p: argparse.ArgumentParser, *, status: bool) -> None:
    """The filters jobs list and replay share (checked in workers/operations/job_search.py:
    one line, exit 2, for a bad one)."""
    p.add_argument("--user", type=uuid_arg, metavar="ID", help="only this person's jobs")
    if status:
        p.add_argument("--status", choices=VISUALIZATION_STATUSES, help="only jobs in this state")
    p.add_argument(
        "--class",
        dest="failure_class",
        action="append",
        choices=FAILURE_CLASSES,
        metavar="CLASS",
        help=f"failed jobs of this failure class (repeatable): {', '.join(FAILURE_CLASSES)}",
    )
    p.add_argument(
        "--since", metavar="T", help="created since: an age back (2h) or a date/time (UTC)"
    )


def _queue_control(add: Add) -> None:
    """emotionviz queue pause|resume|list (issue 24.3)."""
    sub = _actions(
        add("queue", None, "pause and resume a queue on every worker (the others keep going)"),
        "action",
    )
    a = _action(
        sub,
        "pause",
        lazy("queue_control", "cmd_pause"),
        "every worker takes no message from NAME from its next fetch, until resumed",
    )
    a.add_argument("name", choices=QUEUES, metavar="NAME", help=f"one of {', '.join(QUEUES)}")
    a.add_argument("--reason", help="why (shown in status, the console and the audit)")
    a.add_argument("--json", action="store_true", help=JSON_HELP)
    a = _action(
        sub, "resume", lazy("queue_control", "cmd_resume"), "workers take NAME's messages again"
    )
    a.add_argument("name", choices=QUEUES, metavar="NAME", help=f"one of {', '.join(QUEUES)}")
    a.add_argument("--json", action="store_true", help=JSON_HELP)
    a = _action(sub, "list", lazy("queue_control", "cmd_list"), "the paused queues")
    a.add_argument("--json", action="store_true", help=JSON_HELP)


def _operators(add: Add) -> None:
    """emotionviz operator add|list|revoke and emotionviz audit (issue 24.4)."""
    sub = _actions(add("operator", None, "named operator tokens for the console"), "action")
    a = _action(
        sub,
        "add",
        lazy("operators", "cmd_add"),
        "a new operator token, printed once (only its hash is kept)",
    )
    a.add_argument("name", metavar="NAME", help="letters, digits, . _ @ - (up to 100)")
    a.add_argument(
        "--scope",
        choices=["read", "write"],
        required=True,
        help="read: see everything; write: also act (replay, purge, pause...)",
    )
    a.add_argument("--json", action="store_true", help=JSON_HELP)
    a = _action(sub, "list", lazy("operators", "cmd_list"), "the operators (never their tokens)")
    a.add_argument("--all", action="store_true", help="revoked ones too")
    a.add_argument("--json", action="store_true", help=JSON_HELP)
    a = _action(
        sub, "revoke", lazy("operators", "cmd_revoke"), "revoke NAME's token (its trail stays)"
    )
    a.add_argument("name", metavar="NAME")
    a.add_argument("--json", action="store_true", help=JSON_HELP)
    p = add(
        "audit",
        lazy("operators", "cmd_audit"),
        "the operators' trail, newest first: who changed what (CLI and console), and "
        "console reads of a person's entry text",
    )
    p.add_argument(
        "--since",
        metavar="WHEN",
        help="an age (30m, 24h, 7d) or an ISO 8601 time (2026-12-01T09:00Z)",
    )
    p.add_argument("--operator", metavar="NAME", help="only this operator's actions")
    p.add_argument("--action", metavar="ACTION", help="only this action (queue.pause, ...)")
    p.add_argument(
        "--limit", type=positive_int, default=100, metavar="N", help="at most N rows (100)"
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def _data_lifecycle(add: Add) -> None:
    """emotionviz user erase and emotionviz retention (issue 24.5)."""
    sub = _actions(add("user", None, "a person's data: erase it, find their log lines"), "action")
    a = _action(
        sub,
        "erase",
        lazy("data_lifecycle", "cmd_erase"),
        "remove every row, picture, message and log reference of a person, for good",
        "Remove the person's rows (every table), pictures (the configured store), queued "
        "and dead-lettered messages (Redis), and leave a tombstone (a digest of the id) "
        "that 'emotionviz restore' applies again. Without --yes: show what would go. "
        "Exit 0: erased. Exit 1: failed (run it again: it resumes). Exit 2: no --yes.",
    )
    a.add_argument("id", type=uuid_arg, help="users.id")
    a.add_argument("--yes", action="store_true", help="erase (default: only show what would go)")
    a.add_argument("--json", action="store_true", help=JSON_HELP)
    a = _action(
        sub,
        "log-ref",
        lazy("data_lifecycle", "cmd_log_ref"),
        "the reference log lines carry instead of an id (search the logs for it)",
    )
    a.add_argument("id", type=uuid_arg, help="a person's, entry's or session's id")
    a.add_argument("--json", action="store_true", help=JSON_HELP)

    sub = _actions(add("retention", None, "the retention purge (RETENTION_*_DAYS)"), "action")
    a = _action(
        sub,
        "run",
        lazy("data_lifecycle", "cmd_retention"),
        "purge what RETENTION_*_DAYS no longer keep, in batches (the scheduler runs it too)",
    )
    a.add_argument("--dry-run", action="store_true", help="only count what would go")
    a.add_argument("--json", action="store_true", help=JSON_HELP)


# The order commands appear in `emotionviz --help` (after cli.py's set-up commands).
REGISTRARS: tuple[Callable[[Add], None], ...] = (
    _worker,
    _jobs,
    _status,
    _dlq,
    _analytics,
    _media,
    _health,
    _doctor,
    _events,
    _usage,
    _job_search,
    _queue_control,
    _operators,
    _data_lifecycle,
)


def register_all(add: Add) -> None:
    from workers.command_rooms import register_elsewhere

    for register in REGISTRARS:
        register(add)
    register_elsewhere(add)  # the console's and the devtools' (workers/command_rooms.py)
