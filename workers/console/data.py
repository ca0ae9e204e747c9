"""What each page shows, read through the same parts the CLI uses (workers/operations/:
collect_status, on the process's shared snapshot; entry_life, session_life;
DeadLetters, the console's read model). Plain, blocking
functions: the routes run them in a worker thread. Every text that could hold a secret
is scrubbed again when rendered (the template environment's finalize)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from domain.errors import NotFoundError
from domain.failures import failure_class
from domain.messages import QUEUES, AnalyticsRecompute
from workers import bootstrap
from workers.console.charts import outcome_charts
from workers.logging import scrub
from workers.messaging.broker_state import BrokerState
from workers.messaging.dead_letters import DeadLetter, DeadLetters
from workers.observability import snapshot
from workers.operations.jobs import entry_life, read_entry, read_session, session_life
from workers.operations.status import collect_status
from workers.schedules import reconcile_trigger
from workers.settings import Settings

FAILURES_PAGE = 50
DEAD_LETTERS_SHOWN = 200
OVERVIEW_CACHE_S = 2.0  # every open tab polls; one read serves them all
PERIOD_KINDS = ("day", "week", "month")


class _Cached:
    """The last overview for OVERVIEW_CACHE_S, shared by every request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = 0.0
        self.value: dict[str, Any] | None = None


_overview_cache = _Cached()


def overview(settings: Settings) -> dict[str, Any]:
    with _overview_cache.lock:
        if (
            _overview_cache.value is None
            or time.monotonic() - _overview_cache.at > OVERVIEW_CACHE_S
        ):
            _overview_cache.value = _read_overview(settings)
            _overview_cache.at = time.monotonic()
        return _overview_cache.value


def _read_overview(settings: Settings) -> dict[str, Any]:
    status = collect_status(settings)
    with bootstrap.unit_of_work() as uow:
        outcomes = uow.console.outcomes_per_minute(60)
    now = datetime.now(UTC)
    status["outcomes_per_minute"] = [
        {"minutes_ago": o.minutes_ago, "completed": o.completed, "failed": o.failed}
        for o in outcomes
    ]
    status["read_at"] = now.isoformat(timespec="seconds")
    status["charts"] = outcome_charts(outcomes, now)
    return status


def overview_json(settings: Settings) -> dict[str, Any]:
    """The overview for scripts (GET /api/overview): the charts as numbers."""
    data = {k: v for k, v in overview(settings).items() if k != "charts"}
    scrubbed: dict[str, Any] = _scrubbed(data)
    return scrubbed


# --- failures ------------------------------------------------------------------------


@dataclass(frozen=True)
class FailureClass:
    name: str
    rows: int
    reasons: list[str | None]


def failures(cls: str | None, page: int) -> dict[str, Any]:
    """Failed rows grouped by failure class; one class's (or every) row, a page at a time."""
    with bootstrap.unit_of_work() as uow:
        reasons = uow.console.failure_reasons()
    grouped: dict[str, list[tuple[str | None, int]]] = defaultdict(list)
    for reason, count in reasons:
        grouped[failure_class(reason)].append((reason, count))
    classes = sorted(
        (
            FailureClass(name, sum(n for _, n in items), [r for r, _ in items])
            for name, items in grouped.items()
        ),
        key=lambda c: (-c.rows, c.name),
    )
    reason_filter: list[str | None] | None = None
    total = sum(c.rows for c in classes)
    if cls is not None:
        chosen = next((c for c in classes if c.name == cls), None)
        reason_filter = chosen.reasons if chosen else []
        total = chosen.rows if chosen else 0
    with bootstrap.unit_of_work() as uow:
        rows = uow.console.failed_rows(
            reason_filter, limit=FAILURES_PAGE, offset=(page - 1) * FAILURES_PAGE
        )
    return {
        "classes": classes,
        "selected": cls,
        "rows": [{"row": row, "class": failure_class(row.reason)} for row in rows],
        "page": page,
        "pages": max(1, -(-total // FAILURES_PAGE)),
        "total": total,
    }


# --- dead letters ----------------------------------------------------------------------


def _broker() -> BrokerState:
    """The broker's state from the shared snapshot (no keyspace SCAN of our own)."""
    snap = snapshot.shared().get()
    if snap.broker is None:
        raise snap.errors["broker"]
    return snap.broker


def dead_letter_queues(settings: Settings) -> dict[str, int]:
    return {name: q.dead for name, q in _broker().queues.items()}


def _dead_letters(settings: Settings) -> DeadLetters:
    return DeadLetters(bootstrap.redis_client(), settings.redis_namespace)


def dead_letters(settings: Settings, queue: str) -> dict[str, Any]:
    letters = _dead_letters(settings).entries(queue, limit=DEAD_LETTERS_SHOWN)
    return {
        "queue": queue,
        "queues": dead_letter_queues(settings),
        "letters": _letter_views(letters),
        "shown": DEAD_LETTERS_SHOWN,
    }


def dead_letter(settings: Settings, queue: str, ident: str) -> dict[str, Any] | None:
    letter = _dead_letters(settings).get(queue, ident)
    if letter is None:
        return None
    return {
        "queue": queue,
        "letter": _letter_views([letter])[0],
        "payload": scrub(json.dumps(letter.body, indent=2, sort_keys=True, default=str)),
    }


def _entry_ids(letter: DeadLetter) -> list[uuid.UUID]:
    """The entries a letter names, ids only (a bad producer's text is no id)."""
    found = []
    for value in letter.entry_ids():
        try:
            found.append(uuid.UUID(value))
        except ValueError:
            continue
    return found


def _letter_views(letters: list[DeadLetter]) -> list[dict[str, Any]]:
    """Each letter's summary, with what its entries' rows say (status, last error)."""
    named = {letter.redis_id: _entry_ids(letter) for letter in letters}
    with bootstrap.unit_of_work() as uow:
        rows = uow.console.row_states([e for ids in named.values() for e in ids])
    return [
        {
            **letter.summary(),
            "age_s": letter.age_s,
            "entries": [(e, *rows.get(e, (None, None))) for e in named[letter.redis_id]],
        }
        for letter in letters
    ]


# --- one job ---------------------------------------------------------------------------


def find_job(ident: uuid.UUID) -> str | None:
    """'entry' or 'session' for an id, None when neither exists."""
    with bootstrap.unit_of_work() as uow:
        if uow.entries.get(ident) is not None:
            return "entry"
        if uow.intake.get(ident) is not None:
            return "session"
    return None


def entry_job(settings: Settings, entry_id: uuid.UUID) -> dict[str, Any] | None:
    try:
        entry, row = read_entry(entry_id)
    except NotFoundError:
        return None
    life = entry_life(settings, entry_id, (entry, row))
    return {
        "life": life,
        "entry": entry.snapshot,
        "created_at": entry.created_at,
        "summary": row.summary if row else None,
        "insights": row.insights if row else [],
        "has_image": bool(row and row.image_url),
        "has_thumbnail": bool(row and row.thumbnail_url),
    }


def session_job(settings: Settings, session_id: uuid.UUID) -> dict[str, Any] | None:
    try:
        session = read_session(session_id)
    except NotFoundError:
        return None
    life = session_life(settings, session_id, session)
    with bootstrap.unit_of_work() as uow:
        entry_id = uow.console.entry_of_session(session_id)
    return {
        "life": life,
        "situation": session.initial_situation,
        "entry_id": entry_id,
    }


def image_file(entry_id: uuid.UUID, size: str) -> tuple[bytes, str] | None:
    """The picture's bytes and media type, read from the media store."""
    with bootstrap.unit_of_work() as uow:
        row = uow.visualizations.get_by_entry(entry_id)
    url = None if row is None else row.thumbnail_url if size == "thumbnail" else row.image_url
    if url is None:
        return None
    # Through the store (a folder or the fleet's bucket), not this machine's disk; None
    # when gone or outside the store (MEDIA_BASE_URL or the bucket changed).
    return bootstrap.picture(url)


# --- analytics ---------------------------------------------------------------------------


# The freshness reads every analytics row (seconds at ten million entries:
# docs/benchmarks.md). A read that slow serves every tab and refresh for a minute (the
# page is about nightly runs); a quick one is not kept.
ANALYTICS_CACHE_S = 60.0
ANALYTICS_SLOW_S = 0.5
_freshness_cache = _Cached()


def _freshness() -> dict[str, Any]:
    with _freshness_cache.lock:
        cached = _freshness_cache.value
        if cached is not None and time.monotonic() - _freshness_cache.at <= ANALYTICS_CACHE_S:
            return cached
        started = time.monotonic()
        with bootstrap.unit_of_work() as uow:
            fresh = {f.kind: f for f in uow.console.analytics_freshness()}
        slow = time.monotonic() - started > ANALYTICS_SLOW_S
        _freshness_cache.value = fresh if slow else None
        _freshness_cache.at = time.monotonic()
        return fresh


def analytics(settings: Settings) -> dict[str, Any]:
    fresh = _freshness()
    state = _broker()
    return {
        "kinds": [(kind, fresh.get(kind)) for kind in PERIOD_KINDS],
        "schedule": next_runs(settings, datetime.now(UTC)),
        "queue": state.queues[AnalyticsRecompute.queue_name],
    }


def next_runs(settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """The scheduler's jobs (workers/entrypoints/scheduler.py), the period each really
    runs at and their next fire time."""
    jobs: list[tuple[str, str, BaseTrigger | None]] = []
    for name, expr in (
        ("analytics day", settings.schedule_analytics_day),
        ("analytics week", settings.schedule_analytics_week),
        ("analytics month", settings.schedule_analytics_month),
    ):
        trigger = CronTrigger.from_crontab(expr, timezone="UTC") if expr else None
        jobs.append((name, expr or "disabled", trigger))
    jobs.append(("reconcile", *reconcile_trigger(settings)))
    return [
        {
            "name": name,
            "cron": shown,
            "next": None if trigger is None else trigger.get_next_fire_time(None, now),
        }
        for name, shown, trigger in jobs
    ]


def known_queue(queue: str) -> bool:
    return queue in QUEUES


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return value
