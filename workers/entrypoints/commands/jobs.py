"""Commands on individual jobs: enqueue, replay, reconcile, and ``job`` (one job's life)."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from db.repositories.job_search import JobFilter
from domain.errors import ConflictError, NotFoundError
from domain.intake import next_step, parse_history
from domain.messages import EntryCreated, IntakeStep, MessageV1
from domain.vocabulary import VisualizationStyle
from workers import bootstrap
from workers.entrypoints.cli_contract import InputError, emit_json, out
from workers.operations import job_search
from workers.operations.audit import audited, record
from workers.operations.jobs import entry_life, replay_failed, session_life
from workers.operations.readable import age
from workers.settings import Settings


def cmd_enqueue(args: argparse.Namespace, settings: Settings) -> int:
    from workers import producer_api  # the producer (pika, Dramatiq): not for `job`

    message: MessageV1
    redraw = bool(getattr(args, "redraw", False))
    if redraw and args.kind != "entry":
        raise InputError("--redraw is for an entry")
    with bootstrap.unit_of_work() as uow:
        if redraw:
            style = VisualizationStyle(args.style) if args.style else None
            try:
                message = producer_api.redraw_request(uow, args.id, None, style)
            except ConflictError as exc:  # not completed: a wrong request, not a failure
                raise InputError(str(exc)) from None
        elif args.kind == "entry":
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
        detail = {"redraw": True, "style": args.style} if redraw else None
        # The operators' trail.
        record(uow, "enqueue", target=f"{args.kind}:{args.id}", count=1, detail=detail)
        uow.commit()
    what = (
        f"intake step {message.step} of session {args.id}"
        if isinstance(message, IntakeStep)
        else f"the {'redraw' if redraw else 'request'} for entry {args.id}"
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
    # ``is not None``: an empty filter (an unset shell variable) must reach build_filter
    # and be refused there, never fall through to "replay every failed row".
    filtered = any(v is not None for v in (args.failure_class, args.since, args.user))
    if filtered or args.dry_run:
        if args.entry_ids:
            raise InputError("give entry ids, or filters (--class, --since, --user), not both")
        return _replay_matching(args)
    replayed = replay_failed(args.entry_ids or None, source="cli")
    if args.json:
        emit_json({"replayed": [str(entry_id) for entry_id in replayed]})
    else:
        out(f"replayed {len(replayed)} failed visualizations")
    return 0


def _replay_matching(args: argparse.Namespace) -> int:
    """The bulk replay: its plan first (counts, paid calls), then batches of --batch
    rows, each one transaction, with a progress bar on a terminal."""
    flt = _filter(args, status=None)
    plan = job_search.plan_replay(flt)
    if args.dry_run:
        if args.json:
            emit_json({"dry_run": True, "filters": job_search.describe(flt)} | plan.as_json())
        else:
            _print_plan(plan, "would replay")
        return 0
    if not plan.rows:
        if args.json:
            nothing = job_search.ReplayResult().as_json()
            emit_json({"filters": job_search.describe(flt)} | nothing)
        else:
            out("nothing to replay: no failed visualization matches")
        return 0
    if not args.json:
        _print_plan(plan, "replaying")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # here only

    columns = (
        TextColumn("replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
    )
    stop = threading.Event()
    with (
        _stopped_by_signals(stop),
        Progress(*columns, transient=True, disable=args.json or not sys.stdout.isatty()) as bar,
    ):
        task = bar.add_task("rows", total=plan.rows)
        result = job_search.replay_matching(
            flt,
            batch=args.batch,
            on_batch=lambda rows, _classes: bar.update(task, advance=rows),
            stop=stop.is_set,
        )
    if stop.is_set():
        sys.stderr.write(
            f"emotionviz replay: stopped after {result.batches} batches ({result.rows} rows "
            "replayed, each batch committed); run the same command again to replay the rest\n"
        )
        return 130
    if args.json:
        emit_json({"filters": job_search.describe(flt)} | result.as_json())
    else:
        classes = ", ".join(f"{n} {name}" for name, n in sorted(result.by_class.items()))
        out(
            f"replayed {result.rows} failed visualizations in {result.batches} batches "
            f"({classes or 'none'}); about {result.paid_calls} paid model calls"
        )
    return 0


@contextlib.contextmanager
def _stopped_by_signals(stop: threading.Event) -> Iterator[None]:
    """Ctrl-C or SIGTERM: finish the batch in flight, then stop (a second Ctrl-C stops
    at once; that batch rolls back)."""

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_plan(plan: job_search.ReplayPlan, lead: str) -> None:
    if not plan.rows:
        out(f"{lead} no failed visualization matches")
        return
    out(f"{lead} {plan.rows} failed visualizations, about {plan.paid_calls} paid model calls:")
    for c in plan.by_class:
        out(
            f"  {c.failure_class:18} {c.rows:>8} rows ({c.checkpointed} with their analysis stored)"
        )


def _filter(args: argparse.Namespace, status: str | None) -> JobFilter:
    return job_search.build_filter(
        user=args.user,
        status=status,
        classes=args.failure_class or (),
        since=args.since,
        older_than=getattr(args, "older_than", None),
    )


# --- jobs list: find jobs by person, status, class, time (workers/operations/job_search.py)


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    page = job_search.find_jobs(_filter(args, args.status), args.limit, args.after)
    if args.json:
        emit_json({"jobs": [job_search.job_json(row) for row in page.rows], "next": page.next})
        return 0
    if not page.rows:
        out("no jobs match")
        return 0
    now = datetime.now(UTC)
    out(f"{'created':19}  {'age':>8}  {'status':10} {'class':16} {'entry':36}  user      reason")
    for row in page.rows:
        reason = (row.error_message or "").replace("\n", " ")[:60]
        out(
            f"{row.created_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  "
            f"{age((now - row.created_at).total_seconds()):>8}  {row.status:10} "
            f"{row.failure_class or '-':16} {row.entry_id}  {str(row.user_id)[:8]}  {reason}"
        )
    if page.next:
        out(f"next page: --after {page.next}")
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    report = bootstrap.run_reconcile()
    if not report.skipped:  # it republishes work: a change, in the operators' trail
        audited("reconcile", count=report.unfinished + report.stuck + report.intake)
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
        raise InputError("give an ENTRY_ID, or --session ID")
    if args.json:
        emit_json(life)
    else:
        _print_life(life)
    return 0
