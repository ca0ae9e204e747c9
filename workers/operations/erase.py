"""Erasing a person in one step, with a report per store: ``emotionviz user erase``.

The order makes a crash anywhere recoverable by running the command again:

1. read the person's ids (theirs, their entries', sessions', visualizations');
2. Redis: remove every message and key naming any of them (while the ids are known);
3. PostgreSQL, one transaction: delete every row naming them (db/repositories/erase.py),
   write the tombstone (a digest, never the id) and the audit record (their log
   reference, never the id). The visualizations' delete trigger leaves their ids in
   media_garbage;
4. the media store (a folder or a bucket, whichever MEDIA_URL names): delete their
   pictures and thumbnails, then the media_garbage rows;
5. Redis again: a message a worker published meanwhile (a retry in flight).

Run again after a crash in 3-4, the person has no rows but a tombstone: the pictures of
every pending media_garbage row are deleted (the reconciler would within a minute too)
and Redis is swept for the user id (every message we send names it). Logs never held
the ids (workers/logging.py: they carry ``log_ref``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from db.repositories.erase import PersonIds, erase_repository
from domain.errors import NotFoundError
from workers import bootstrap
from workers.logging import get_logger, log_ref
from workers.messaging.erasure import RedisErasure, erase_from_redis
from workers.operations.audit import record
from workers.settings import Settings

log = get_logger("emotionviz.erase")


@dataclass
class ErasureReport:
    ref: str  # the person's log reference: what the logs and the audit trail name
    applied: bool
    found: bool  # the person had rows
    already_erased: bool  # a tombstone existed before this run
    rows: dict[str, int] = field(default_factory=dict)
    pictures: dict[str, Any] = field(default_factory=dict)
    redis: dict[str, Any] = field(default_factory=dict)
    rabbitmq: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "log_ref": self.ref,
            "applied": self.applied,
            "found": self.found,
            "already_erased": self.already_erased,
            "postgresql": {"rows": self.rows, "total": sum(self.rows.values())},
            "media": self.pictures,
            "redis": self.redis,
            "rabbitmq": self.rabbitmq,
        }

    def tombstone_report(self) -> dict[str, Any]:
        """Counts only (the tombstone keeps no text)."""
        return {
            "rows": dict(self.rows),
            "messages": int(self.redis.get("messages", 0)),
        }


def _rabbitmq_note(settings: Settings) -> str | None:
    if bootstrap.rabbitmq_url(settings) is None:
        return None
    return (
        "not reached: RabbitMQ queues cannot be searched without consuming them; their "
        "messages naming the person find no rows and are acknowledged (docs/operations.md)"
    )


def erase_person(settings: Settings, user_id: uuid.UUID, *, apply: bool) -> ErasureReport:
    """Erase (``apply``) or only count what erasing ``user_id`` would remove."""
    ref = log_ref(user_id)
    with bootstrap.unit_of_work() as uow:
        repo = erase_repository(uow)
        person = repo.person(user_id)
        already = repo.is_erased(user_id)
        rows = repo.count_rows(person) if person is not None and not apply else {}
    if person is None and not already:
        raise NotFoundError(f"no such person (log reference {ref}); nothing was changed")
    report = ErasureReport(ref, apply, person is not None, already, rows=rows)
    report.rabbitmq = _rabbitmq_note(settings)
    ids = person.all() if person is not None else [str(user_id)]
    client, namespace = bootstrap.redis_client(), settings.redis_namespace
    if not apply:
        report.redis = erase_from_redis(client, namespace, ids, dry_run=True).as_dict()
        vids = person.visualization_ids if person is not None else ()
        report.pictures = {"store": bootstrap.image_store().describe(), "visualizations": len(vids)}
        return report

    swept = erase_from_redis(client, namespace, ids)
    if person is not None:
        report.rows = _delete_rows(person, ref, already)
    report.pictures = _delete_pictures(person)
    _add(swept, erase_from_redis(client, namespace, ids))  # published meanwhile
    report.redis = swept.as_dict()
    if person is not None:
        with bootstrap.unit_of_work() as uow:  # the counts the tombstone keeps, complete
            erase_repository(uow).update_tombstone(user_id, report.tombstone_report())
            uow.commit()
    log.info(
        "person erased",
        person=ref,
        rows=sum(report.rows.values()),
        pictures=report.pictures.get("files_deleted", 0),
        messages=swept.total_messages,
    )
    return report


def _delete_rows(person: PersonIds, ref: str, already: bool) -> dict[str, int]:
    with bootstrap.unit_of_work() as uow:
        repo = erase_repository(uow)
        rows = repo.delete_person(person, ref)
        repo.tombstone(person.user_id, {"rows": rows})
        record(uow, "user_erase", target=ref, count=sum(rows.values()), detail={"rows": rows})
        uow.commit()
    return rows


def _delete_pictures(person: PersonIds | None) -> dict[str, Any]:
    """The pictures of every deleted visualization (the person's, just queued by the
    delete trigger, and any a crashed run left), in the configured store, through the
    media_garbage outbox: files first, then the rows (services/media.py)."""
    store = bootstrap.image_store()
    lifecycle = bootstrap.media_lifecycle()
    garbage_rows = files = 0
    while True:
        rows, deleted = lifecycle.collect_garbage(limit=1000)
        garbage_rows, files = garbage_rows + rows, files + deleted
        if rows < 1000:
            break
    return {
        "store": store.describe(),
        "visualizations": len(person.visualization_ids) if person is not None else 0,
        "files_deleted": files,
        "garbage_rows": garbage_rows,
    }


def _add(total: RedisErasure, more: RedisErasure) -> None:
    for key, count in more.messages.items():
        total.messages[key] = total.messages.get(key, 0) + count
    total.other_keys += more.other_keys
    total.other_values += more.other_values


def log_reference(user_id: uuid.UUID) -> str:
    """What the logs carry for ``user_id`` (or any id): ``emotionviz user log-ref``."""
    return log_ref(user_id)
