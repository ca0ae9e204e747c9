"""Pausing a queue (issue 24.3): ``emotionviz queue pause|resume|list`` and the console.

PostgreSQL's ``paused_queues`` is the truth; the workers read a mirror of it in Redis
inside their fetch (workers/messaging/pauses.py, redis_keys._FETCH_UNLESS_PAUSED). A
pause or resume changes the row, rewrites the whole mirror from the table and commits,
all under one advisory lock (db/repositories/pauses.py), so mirrors are written in the
order of the commits. A worker rebuilds the mirror the same way at its start and
whenever it finds it missing (``restore_mirror``). The change is in the operators'
trail, in its transaction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from db.repositories.audit import Source
from db.repositories.pauses import PausedRow, PauseRepository, pause_repository
from db.uow import UnitOfWork
from domain.errors import ConfigurationError, ConflictError
from domain.messages import QUEUES
from workers import bootstrap
from workers.messaging.pauses import PauseMirror
from workers.operations.audit import cli_operator, record
from workers.settings import get_settings


@dataclass(frozen=True)
class Pause:
    queue: str
    paused_at: datetime
    paused_by: str
    reason: str | None

    @property
    def paused_s(self) -> float:
        return max(0.0, (datetime.now(UTC) - self.paused_at).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "paused_at": self.paused_at.isoformat(timespec="seconds"),
            "paused_s": round(self.paused_s, 1),
        }


def pause_of(row: PausedRow) -> Pause:
    """A row as shown (status reads the rows from its snapshot)."""
    return Pause(row.name, row.paused_at, row.paused_by, row.reason)


def known(queue: str) -> str:
    """``queue`` if the workers consume it; ConfigurationError (exit 2) otherwise."""
    if queue not in QUEUES:
        raise ConfigurationError(f"no queue {queue!r} (queues: {', '.join(QUEUES)})")
    return queue


def _mirror() -> PauseMirror:
    return PauseMirror(bootstrap.redis_client(), get_settings().redis_namespace)


def _write_mirror(repo: PauseRepository, mirror: PauseMirror) -> None:
    mirror.write({row.name: row.paused_at.isoformat() for row in repo.paused()})


def pause_queue(
    queue: str,
    *,
    reason: str | None = None,
    operator: str | None = None,
    source: Source = "cli",
) -> Pause:
    """Pause ``queue`` on every worker from its next fetch; ConflictError when it is
    paused already (the first pause's time and author are kept)."""
    known(queue)
    who = operator or cli_operator()
    mirror = _mirror()
    with bootstrap.unit_of_work() as uow:
        repo = pause_repository(uow)
        repo.lock()
        row = repo.pause(queue, by=who, reason=reason)
        if row is None:
            raise ConflictError(f"queue {queue} is paused already")
        record(
            uow,
            "queue.pause",
            operator=who,
            source=source,
            target=queue,
            detail={"reason": reason} if reason else None,
        )
        _write_mirror(repo, mirror)  # under the lock: mirrors follow the commits' order
        uow.commit()
    return pause_of(row)


def resume_queue(queue: str, *, operator: str | None = None, source: Source = "cli") -> Pause:
    """Resume ``queue``: idle workers are woken and drain it. ConflictError when it was
    not paused."""
    known(queue)
    who = operator or cli_operator()
    mirror = _mirror()
    with bootstrap.unit_of_work() as uow:
        repo = pause_repository(uow)
        repo.lock()
        row = repo.resume(queue)
        if row is None:
            raise ConflictError(f"queue {queue} is not paused")
        paused = pause_of(row)
        record(
            uow,
            "queue.resume",
            operator=who,
            source=source,
            target=queue,
            detail={"paused_s": round(paused.paused_s, 1), "paused_by": row.paused_by},
        )
        _write_mirror(repo, mirror)
        uow.commit()
    mirror.wake(queue)  # consumers idling on it fetch now, not after their backoff
    return paused


def paused_queues(uow: UnitOfWork | None = None) -> list[Pause]:
    """The paused queues, as PostgreSQL says."""
    if uow is not None:
        return [pause_of(row) for row in pause_repository(uow).paused()]
    with bootstrap.unit_of_work() as own:
        return [pause_of(row) for row in pause_repository(own).paused()]


def restore_mirror() -> None:
    """Rebuild the workers' mirror from PostgreSQL (a worker's start; a lost mirror)."""
    mirror = _mirror()
    with bootstrap.unit_of_work() as uow:
        repo = pause_repository(uow)
        repo.lock()
        _write_mirror(repo, mirror)
        uow.commit()


def mirrored() -> dict[str, str] | None:
    """The workers' mirror (queue -> since); None when Redis lost it."""
    return _mirror().read()
