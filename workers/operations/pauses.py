"""Pausing a queue (issue 24.3): ``emotionviz queue pause|resume|list`` and the console.

PostgreSQL's ``paused_queues`` is the truth; the workers read a mirror of it in Redis
inside their fetch (workers/messaging/pauses.py, redis_keys._FETCH_UNLESS_PAUSED). A
pause or resume changes the row (with its trail row) and commits first; then the whole
mirror is rewritten from the table under the advisory lock (db/repositories/pauses.py),
each rewrite reading the table after the commits before it, so the last rewrite is the
last commit's state. Never the reverse: a mirror written before a commit that then
failed would stop (or run) a queue PostgreSQL says runs (is paused). A rewrite that
fails after the commit is one line (exit 1): the change holds, and the workers' next
sync writes the mirror. The workers rebuild it at their start and whenever it is
missing (``restore_mirror``), and compare it with the table every few seconds and after
a Redis failover (``sync_mirror``, workers/messaging/pause_sync.py): a mirror present
but stale (a promoted replica that missed the last write, a restart from an older
snapshot) is rewritten.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from db.repositories.audit import Source
from db.repositories.pauses import PausedRow, PauseRepository, pause_repository
from db.uow import UnitOfWork
from domain.errors import ConfigurationError, ConflictError, EmotionVizError
from domain.messages import QUEUES
from workers import bootstrap
from workers.logging import get_logger
from workers.messaging.pauses import PauseMirror
from workers.operations.audit import cli_operator, record
from workers.settings import get_settings

log = get_logger("emotionviz.pauses")


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
        uow.commit()
    _mirror_after_commit(mirror, f"queue {queue} is paused")
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
        uow.commit()
    _mirror_after_commit(mirror, f"queue {queue} is resumed")
    mirror.wake(queue)  # consumers idling on it fetch now, not after their backoff
    return paused


def paused_queues(uow: UnitOfWork | None = None) -> list[Pause]:
    """The paused queues, as PostgreSQL says."""
    if uow is not None:
        return [pause_of(row) for row in pause_repository(uow).paused()]
    with bootstrap.unit_of_work() as own:
        return [pause_of(row) for row in pause_repository(own).paused()]


def _mirror_after_commit(mirror: PauseMirror, done: str) -> None:
    """Rewrite the mirror after a committed change; its failure is one line (exit 1)
    that says the change holds in PostgreSQL and the workers' next sync repairs it."""
    try:
        _rewrite(mirror)
    except (EmotionVizError, redis.RedisError) as exc:
        raise EmotionVizError(
            f"{done} in the database, but the workers' copy in Redis could not be "
            f"written ({type(exc).__name__}); the workers' next sync (every "
            f"{SYNC_EVERY_S:g} s) applies it"
        ) from exc


def _rewrite(mirror: PauseMirror) -> None:
    """The mirror from the table, under the lock: rewrites happen one at a time, each
    reading the table after the commits before it (READ COMMITTED)."""
    with bootstrap.unit_of_work() as uow:
        repo = pause_repository(uow)
        repo.lock()
        _write_mirror(repo, mirror)
        uow.commit()


def restore_mirror() -> None:
    """Rebuild the workers' mirror from PostgreSQL (a worker's start; a lost mirror)."""
    _rewrite(_mirror())


# How often each worker process compares the mirror with the table (sync_mirror).
SYNC_EVERY_S = 5.0


def sync_mirror() -> bool:
    """Compare the mirror with the table and rewrite it when they differ (missing, or
    present but stale: a promoted replica, a restart from an older snapshot); True when
    it was rewritten. A look costs one SELECT and one HGETALL, no lock."""
    mirror = _mirror()
    with bootstrap.unit_of_work() as uow:
        truth = {row.name: row.paused_at.isoformat() for row in pause_repository(uow).paused()}
    seen = mirror.read()
    if seen == truth:
        return False
    # (A change committed but not yet mirrored looks stale too: rewriting it is harmless.)
    _rewrite(mirror)
    log.warning(
        "paused queues' mirror in Redis differed from the database; rewritten",
        missing=seen is None,
        paused=sorted(truth),
        mirrored=None if seen is None else sorted(seen),
    )
    return True


def mirrored() -> dict[str, str] | None:
    """The workers' mirror (queue -> since); None when Redis lost it."""
    return _mirror().read()
