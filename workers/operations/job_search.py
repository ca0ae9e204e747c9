"""Find jobs and act on many (issue 24.1-24.2), for ``emotionviz jobs list`` / ``replay
--class ...`` and the console's jobs page: the filters as operators type them, pages
with a "next" cursor, what a bulk replay would cost, and the replay itself in batches.

A bulk replay is a series of transactions of ``batch`` rows each: pick the next failed
rows matching the filters (locked, skipping rows another replay holds), set them back to
pending, record the batch in the operators' trail, commit, then publish their messages.
So an interruption loses nothing and redoes nothing: what a batch committed is pending,
no longer failed, and a rerun picks up the rest. Within a run the batches walk forward
(a cursor), so a row that fails again meanwhile is not paid for twice in one run.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from db.repositories.audit import Source
from db.repositories.job_search import (
    ClassCount,
    Cursor,
    JobFilter,
    JobRow,
    Picked,
    classes_of,
    job_search_of,
)
from domain import failures
from domain.errors import ConfigurationError
from domain.messages import EntryCreated
from domain.moments import TimeInputError, parse_age, parse_moment
from domain.vocabulary import VisualizationStatus, VisualizationStyle
from workers import bootstrap
from workers.logging import get_logger
from workers.operations.audit import record
from workers.operations.published import require_published

log = get_logger("emotionviz.replay")

DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
DEFAULT_BATCH = 500
# Model calls a failed row costs when replayed: the picture only when its analysis is
# stored (the checkpoint, services/visualize.py), else the analysis and the picture.
CALLS_WITH_CHECKPOINT = 1
CALLS_WITHOUT_CHECKPOINT = 2

# The failure classes' names, in domain/failures.py's order, then OTHER (the console's
# jobs page and the CLI's mirror read them here).
FAILURE_CLASSES: tuple[str, ...] = failures.FAILURE_CLASSES
STATUSES: tuple[str, ...] = tuple(s.value for s in VisualizationStatus)
FAILED = VisualizationStatus.FAILED.value


class FilterError(ConfigurationError):
    """A filter an operator typed is not valid (exit 2; the console shows the line)."""


# --- what operators type ---------------------------------------------------------------
# Ages and moments: domain/moments.py, the parser the CLI's options share; its errors
# become FilterError here, so the console has one error to show as a 400.


def _moment(text: str, what: str, now: datetime) -> datetime:
    try:
        return parse_moment(text, what, now)
    except TimeInputError as exc:
        raise FilterError(str(exc)) from None


def _age(text: str, what: str) -> timedelta:
    try:
        return parse_age(text, what)
    except TimeInputError as exc:
        raise FilterError(str(exc)) from None


def build_filter(
    *,
    user: uuid.UUID | str | None = None,
    status: str | None = None,
    classes: list[str] | tuple[str, ...] = (),
    since: str | None = None,
    older_than: str | None = None,
    now: datetime | None = None,
) -> JobFilter:
    """The filter from what an operator typed; FilterError names what is wrong."""
    now = now or datetime.now(UTC)
    if isinstance(user, str):
        typed = user
        try:
            user = uuid.UUID(typed.strip())
        except ValueError:
            raise FilterError(f"user: not an id (a UUID): {typed[:80]!r}") from None
    if status is not None and status not in STATUSES:
        raise FilterError(f"status: one of {', '.join(STATUSES)}, not {status[:40]!r}")
    unknown = [c for c in classes if c not in FAILURE_CLASSES]
    if unknown:
        raise FilterError(
            f"class: {unknown[0][:40]!r} is not a failure class "
            f"(one of {', '.join(FAILURE_CLASSES)})"
        )
    if classes and status not in (None, FAILED):
        raise FilterError(f"class: only failed jobs have a failure class, not {status} ones")
    flt = JobFilter(
        user_id=user,
        status=FAILED if classes else status,
        classes=tuple(dict.fromkeys(classes)),
        # ``is not None``: an empty value is refused (domain/moments.py), never "no filter".
        since=_moment(since, "since", now) if since is not None else None,
        before=now - _age(older_than, "older-than") if older_than is not None else None,
    )
    if flt.since and flt.before and flt.since > flt.before:
        raise FilterError("since: later than --older-than allows: no job can match")
    return flt


def describe(flt: JobFilter) -> dict[str, Any]:
    """The filter as the audit trail and --json show it."""
    return {
        "user": str(flt.user_id) if flt.user_id else None,
        "status": flt.status,
        "classes": list(flt.classes),
        "since": flt.since.isoformat() if flt.since else None,
        "created_before": flt.before.isoformat() if flt.before else None,
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(cursor: Cursor) -> str:
    micros = (cursor.created_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros}.{cursor.id.hex}"


def decode_cursor(text: str) -> Cursor:
    try:
        micros, ident = text.strip().split(".", 1)
        return Cursor(_EPOCH + timedelta(microseconds=int(micros)), uuid.UUID(hex=ident))
    except (ValueError, OverflowError):
        raise FilterError(f"after: not a cursor this listing printed: {text[:80]!r}") from None


# --- find ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    rows: list[JobRow]
    next: str | None  # the cursor of the next page; None: this is the last


def find_jobs(flt: JobFilter, limit: int = DEFAULT_LIMIT, after: str | None = None) -> Page:
    if not 1 <= limit <= MAX_LIMIT:
        raise FilterError(f"limit: between 1 and {MAX_LIMIT}, not {limit}")
    start = decode_cursor(after) if after is not None else None  # "": refused, not page 1
    with bootstrap.unit_of_work() as uow:
        rows = job_search_of(uow).page(flt, limit + 1, start)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].cursor) if more else None)


def job_json(row: JobRow) -> dict[str, Any]:
    return {
        "entry_id": str(row.entry_id),
        "user_id": str(row.user_id),
        "status": row.status,
        "style": row.style,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "failure_class": row.failure_class,
        "error_message": row.error_message,
        "checkpointed": row.checkpointed,
    }


# --- act on many: the plan, then the batches -------------------------------------------


@dataclass(frozen=True)
class ReplayPlan:
    """What a replay of the failed rows matching a filter would do, and cost."""

    by_class: list[ClassCount]

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.by_class)

    @property
    def paid_calls(self) -> int:
        return sum(
            c.checkpointed * CALLS_WITH_CHECKPOINT
            + (c.rows - c.checkpointed) * CALLS_WITHOUT_CHECKPOINT
            for c in self.by_class
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "paid_calls": self.paid_calls,
            "by_class": {
                c.failure_class: {"rows": c.rows, "checkpointed": c.checkpointed}
                for c in self.by_class
            },
        }


def plan_replay(flt: JobFilter) -> ReplayPlan:
    """Counts only: touches nothing."""
    with bootstrap.unit_of_work() as uow:
        return ReplayPlan(job_search_of(uow).failed_counts(flt))


@dataclass
class ReplayResult:
    rows: int = 0
    paid_calls: int = 0
    batches: int = 0
    by_class: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "replayed": self.rows,
            "paid_calls": self.paid_calls,
            "batches": self.batches,
            "by_class": dict(sorted(self.by_class.items())),
        }


def _message(entry_id: uuid.UUID, user_id: uuid.UUID, style: str) -> EntryCreated:
    # The lower lane comes with the commit: a dispatch of a row that exists already (a
    # replay, a republish) joins the fair pool in the low lane, taken after every fresh
    # entry (db/repositories/reconcile.py: record_dispatches, migration 0008).
    return EntryCreated(entry_id=entry_id, user_id=user_id, style=VisualizationStyle(style))


def replay_matching(
    flt: JobFilter,
    *,
    batch: int = DEFAULT_BATCH,
    source: Source = "cli",
    operator: str | None = None,
    on_batch: Callable[[int, Mapping[str, int]], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> ReplayResult:
    """Replay the failed rows matching ``flt`` in transactions of ``batch`` rows, each
    recorded in the trail; ``on_batch(rows, by_class)`` after each commit; ``stop()``
    checked between batches (an interrupted replay is resumed by running it again)."""
    result = ReplayResult()
    # One class at a time: each batch is then a range of one index.
    for cls in flt.classes or (None,):
        after: Cursor | None = None
        while stop is None or not stop():
            with bootstrap.unit_of_work() as uow:
                picked = job_search_of(uow).pick_failed(flt, cls, batch, after)
                if not picked:
                    break
                after = picked[-1].cursor
                replayed = uow.visualizations.replay_failed([p.entry_id for p in picked])
                for entry_id, user_id, style in replayed:
                    uow.publish(_message(entry_id, user_id, style))
                counts = classes_of(picked)
                calls = _calls(picked)
                record(
                    uow,
                    "replay",
                    operator=operator,
                    source=source,
                    target="failed visualizations",
                    count=len(replayed),
                    detail={
                        "filters": describe(flt),
                        "by_class": counts,
                        "paid_calls": calls,
                        "batch": result.batches + 1,
                    },
                )
                uow.commit()
            result.rows += len(replayed)
            result.paid_calls += calls
            result.batches += 1
            for name, n in counts.items():
                result.by_class[name] = result.by_class.get(name, 0) + n
            log.debug(
                "replay batch committed",
                rows=len(replayed),
                by_class=counts,
                batch=result.batches,
                source=source,
            )
            if on_batch is not None:
                on_batch(len(replayed), counts)
            require_published(uow)
    log.info("replay done", filters=describe(flt), source=source, **result.as_json())
    return result


def _calls(picked: list[Picked]) -> int:
    return sum(
        CALLS_WITH_CHECKPOINT if p.checkpointed else CALLS_WITHOUT_CHECKPOINT for p in picked
    )
