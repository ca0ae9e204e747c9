"""Finding jobs (visualization rows) by person, status, failure class and creation time,
a page at a time, and picking the failed ones a bulk replay sets back to pending.

Every read is a range of an index in the listing's order, ``created_at DESC, id DESC``
(keyset paging: a page starts after the last row of the previous one, never an OFFSET):

- a failure class: ``idx_visualizations_failed_class`` (migration 0010), on
  ``visualization_failure_class(error_message)``, the SQL twin of
  domain/failures.py's ``failure_class``; several classes are one range each, merged;
- a status other than completed: ``idx_visualizations_open_status`` (0010);
- a person: their rows (``idx_visualizations_user_id``/``user_status``), sorted;
- otherwise (completed, or no filter): ``idx_visualizations_created_at``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from domain.failures import failure_class
from domain.vocabulary import VisualizationStatus

if TYPE_CHECKING:
    from db.uow import UnitOfWork

FAILED = VisualizationStatus.FAILED.value
# The index expression, written exactly as migration 0010's index has it.
CLASS_OF = "visualization_failure_class(error_message)"


@dataclass(frozen=True)
class JobFilter:
    """Which jobs: every field narrows (None/empty: any)."""

    user_id: uuid.UUID | None = None
    status: str | None = None
    classes: tuple[str, ...] = ()  # failure classes: failed rows only
    since: datetime | None = None  # created at or after
    before: datetime | None = None  # created at or before ("older than")


@dataclass(frozen=True)
class Cursor:
    """The last row of a page: the next page starts after it."""

    created_at: datetime
    id: uuid.UUID


@dataclass(frozen=True)
class JobRow:
    id: uuid.UUID
    entry_id: uuid.UUID
    user_id: uuid.UUID
    status: str
    style: str
    created_at: datetime
    updated_at: datetime
    error_message: str | None
    failure_class: str | None  # failed rows only
    checkpointed: bool  # the analysis is stored: a replay pays only for the picture

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.created_at, self.id)


@dataclass(frozen=True)
class ClassCount:
    failure_class: str
    rows: int
    checkpointed: int  # of them, with the analysis stored


@dataclass(frozen=True)
class Picked:
    """A failed row a replay batch holds (locked until its transaction ends)."""

    entry_id: uuid.UUID
    failure_class: str
    checkpointed: bool
    cursor: Cursor


_COLUMNS = f"""id, entry_id, user_id, status, style, created_at, updated_at, error_message,
    CASE WHEN status = '{FAILED}' THEN {CLASS_OF} END AS failure_class,
    gemini_analysis IS NOT NULL AS checkpointed"""
_ORDER = "ORDER BY created_at DESC, id DESC"
# Written so that each index's columns take it as a range (row comparisons on DESC
# columns are not always matched to the index).
_AFTER = "created_at <= :after_at AND (created_at < :after_at OR id < :after_id)"


def _conditions(
    flt: JobFilter, cls: str | None, after: Cursor | None, params: dict[str, Any], tag: str = ""
) -> str:
    """The WHERE clause; its parameters go into ``params`` (named with ``tag``)."""
    terms: list[str] = []
    if cls is not None:
        # The partial index's predicate and expression, literally.
        terms += [f"status = '{FAILED}'", f"{CLASS_OF} = :cls{tag}"]
        params[f"cls{tag}"] = cls
    elif flt.status is not None:
        # A literal (one of the enum's values), so that the planner can prove a partial
        # index's predicate even on a generic plan.
        terms.append(f"status = '{VisualizationStatus(flt.status).value}'")
    if flt.user_id is not None:
        terms.append(f"user_id = :user_id{tag}")
        params[f"user_id{tag}"] = flt.user_id
    if flt.since is not None:
        terms.append(f"created_at >= :since{tag}")
        params[f"since{tag}"] = flt.since
    if flt.before is not None:
        terms.append(f"created_at <= :before{tag}")
        params[f"before{tag}"] = flt.before
    if after is not None:
        terms.append(
            _AFTER.replace(":after_at", f":after_at{tag}").replace(":after_id", f":after_id{tag}")
        )
        params.update({f"after_at{tag}": after.created_at, f"after_id{tag}": after.id})
    return " AND ".join(terms) or "true"


def job_search_of(uow: UnitOfWork) -> JobSearchRepository:
    """The repository on a unit of work's session (``uow.session``)."""
    return JobSearchRepository(uow.session)


class JobSearchRepository:
    """On the unit's Session: ``job_search_of(uow)``."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def page(self, flt: JobFilter, limit: int, after: Cursor | None = None) -> list[JobRow]:
        """Up to ``limit`` jobs newest first, after ``after``."""
        params: dict[str, Any] = {"limit": limit}
        if len(flt.classes) <= 1:
            cls = flt.classes[0] if flt.classes else None
            sql = (
                f"SELECT {_COLUMNS} FROM visualizations "
                f"WHERE {_conditions(flt, cls, after, params)} {_ORDER} LIMIT :limit"
            )
        else:
            # One range per class, each cut to the page, then merged: never a sort of
            # every failed row of those classes.
            branches = []
            for n, cls in enumerate(flt.classes):
                where = _conditions(flt, cls, after, params, tag=f"_{n}")
                branches.append(
                    f"(SELECT {_COLUMNS} FROM visualizations WHERE {where} {_ORDER} LIMIT :limit)"
                )
            sql = f"SELECT * FROM ({' UNION ALL '.join(branches)}) AS merged {_ORDER} LIMIT :limit"
        rows = self.session.execute(text(sql), params)
        return [JobRow(**row._mapping) for row in rows]

    def failed_counts(self, flt: JobFilter) -> list[ClassCount]:
        """Failed rows matching ``flt`` by class, with how many have their analysis
        stored (what a replay would cost), most rows first. Grouped by reason in SQL and
        classified here: the class function costs ~20 us a row, a reason's class is
        computed once (domain.failures, which the SQL function mirrors)."""
        params: dict[str, Any] = {}
        failed = JobFilter(flt.user_id, FAILED, (), flt.since, flt.before)
        where = _conditions(failed, None, None, params)
        if flt.classes:
            where += f" AND {CLASS_OF} = ANY(:classes)"
            params["classes"] = list(flt.classes)
        sql = (
            "SELECT error_message, count(*) AS n, "
            "count(*) FILTER (WHERE gemini_analysis IS NOT NULL) AS checkpointed "
            f"FROM visualizations WHERE {where} GROUP BY error_message"
        )
        totals: dict[str, list[int]] = {}
        for row in self.session.execute(text(sql), params):
            counts = totals.setdefault(failure_class(row.error_message), [0, 0])
            counts[0] += int(row.n)
            counts[1] += int(row.checkpointed)
        return sorted(
            (ClassCount(name, n, checkpointed) for name, (n, checkpointed) in totals.items()),
            key=lambda c: (-c.rows, c.failure_class),
        )

    def pick_failed(
        self, flt: JobFilter, cls: str | None, limit: int, after: Cursor | None
    ) -> list[Picked]:
        """The next ``limit`` failed rows (of class ``cls``, or any) after ``after``,
        locked for this transaction; rows another transaction holds are skipped."""
        params: dict[str, Any] = {"limit": limit}
        failed = JobFilter(flt.user_id, FAILED, (), flt.since, flt.before)
        sql = (
            f"SELECT entry_id, created_at, id, {CLASS_OF} AS cls, "
            "gemini_analysis IS NOT NULL AS checkpointed FROM visualizations "
            f"WHERE {_conditions(failed, cls, after, params)} {_ORDER} LIMIT :limit "
            "FOR UPDATE SKIP LOCKED"
        )
        return [
            Picked(row.entry_id, row.cls, bool(row.checkpointed), Cursor(row.created_at, row.id))
            for row in self.session.execute(text(sql), params)
        ]


def classes_of(picked: Sequence[Picked]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in picked:
        counts[row.failure_class] = counts.get(row.failure_class, 0) + 1
    return counts
