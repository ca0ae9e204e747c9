"""The pictures' lifecycle: a picture lives exactly as long as its visualization row.

- A deleted visualization (itself, its entry or its person: the FKs cascade) leaves its
  id in the media_garbage outbox (a trigger, same transaction); ``collect_garbage``
  deletes its files, then the outbox row. The reconciler runs it every minute, so a
  person who leaves leaves nothing on disk.
- A replay that draws a picture again overwrites the same keys (made from the row id);
  a different format's old file is removed when the new one is stored.
- A redraw (docs/operations.md, "Redraw") stores its picture under the row's other
  slot (``{id}_v2.png`` when the row points at ``{id}.png``, and back): the row keeps
  naming a file that exists until its completion names the new one; the old slot's
  files are removed after that commit (a crash between leaves an orphan for `media gc`,
  never a row naming a missing file). ``all_keys`` covers both slots.
- ``find_orphans`` compares the files with the rows, for what happened outside these
  paths (files from a restored backup, rows deleted before the trigger existed):
  ``emotionviz media gc`` (a dry run unless --apply). A row whose URL the store does
  not recognise (MEDIA_BASE_URL or the bucket changed since) keeps all its files: the
  scan cannot tell which are current, and deleting a person's picture is not undone.

The store is whichever MEDIA_URL names (workers/providers/storage.py: a folder, or an
S3 bucket shared by every machine), so all of this works from any machine.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from db.uow import UnitOfWork
from domain.errors import TransientError
from domain.providers import ImageStore
from workers.logging import get_logger

log = get_logger("emotionviz.media")

FOLDER = "visualizations"
IMAGE_EXTENSIONS = ("png", "jpg", "webp")
ORPHAN_MIN_AGE_S = 3600.0
# Slot 0 is the first picture's keys, slot 1 a redraw's; redraws alternate between them.
SLOTS = ("", "_v2")
_KEY = re.compile(rf"^{FOLDER}/([0-9a-f-]{{36}})(_v2)?(_thumb)?\.(png|jpg|webp)$")


def image_key(visualization_id: uuid.UUID, extension: str, slot: int = 0) -> str:
    return f"{FOLDER}/{visualization_id}{SLOTS[slot]}.{extension}"


def thumbnail_key(visualization_id: uuid.UUID, slot: int = 0) -> str:
    return f"{FOLDER}/{visualization_id}{SLOTS[slot]}_thumb.webp"


def slot_keys(visualization_id: uuid.UUID, slot: int) -> list[str]:
    return [image_key(visualization_id, ext, slot) for ext in IMAGE_EXTENSIONS] + [
        thumbnail_key(visualization_id, slot)
    ]


def all_keys(visualization_id: uuid.UUID) -> list[str]:
    return [key for slot in range(len(SLOTS)) for key in slot_keys(visualization_id, slot)]


def slot_of(key: str | None) -> int | None:
    """The slot of a picture key of ours; None for another key (or none)."""
    match = _KEY.match(key) if key else None
    return None if match is None else (1 if match.group(2) else 0)


@dataclass(frozen=True)
class GcReport:
    garbage_rows: int
    files_deleted: int
    orphans: list[str]
    applied: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "garbage_rows": self.garbage_rows,
            "files_deleted": self.files_deleted,
            "orphans": len(self.orphans),
            "applied": self.applied,
        }


class MediaLifecycle:
    def __init__(self, uow_factory: Callable[[], UnitOfWork], store: ImageStore) -> None:
        self.uow_factory = uow_factory
        self.store = store

    def replaced(self, visualization_id: uuid.UUID, kept_extension: str, slot: int = 0) -> None:
        """After storing a picture: remove the same row's picture in another format (in
        the same slot). Tidying only: a store that fails here (an S3 hiccup) is logged
        and the file left to `media gc` (an orphan); raising would retry the job and pay
        for its picture again."""
        self._delete(
            image_key(visualization_id, extension, slot)
            for extension in IMAGE_EXTENSIONS
            if extension != kept_extension
        )

    def retired(self, visualization_id: uuid.UUID, slot: int) -> None:
        """After a redraw's completion committed: remove the slot it replaced (tidying
        only, as ``replaced``)."""
        self._delete(slot_keys(visualization_id, slot))

    def _delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            try:
                self.store.delete(key)
            except TransientError as exc:
                log.warning(
                    "an earlier picture could not be removed; media gc will",
                    key=key,
                    reason=str(exc),
                )

    def collect_garbage(self, limit: int = 1000) -> tuple[int, int]:
        """Delete the files of deleted visualizations; (outbox rows, files deleted)."""
        with self.uow_factory() as uow:
            garbage = uow.media.garbage(limit)
        deleted = sum(self.store.delete(key) for _, vid in garbage for key in all_keys(vid))
        with self.uow_factory() as uow:
            uow.media.forget_garbage([gid for gid, _ in garbage])
            uow.commit()
        if garbage:
            log.info("pictures of deleted visualizations removed", rows=len(garbage), files=deleted)
        return len(garbage), deleted

    def find_orphans(self, min_age_s: float = ORPHAN_MIN_AGE_S) -> list[str]:
        """Stored files no row references: no such visualization, or not its current
        picture or thumbnail. Files younger than ``min_age_s`` are left alone: a job
        stores its picture a moment before its row names it."""
        keys = [key for key, age in self.store.stored(FOLDER) if age >= min_age_s]
        ids = {uuid.UUID(m.group(1)) for key in keys if (m := _KEY.match(key))}
        referenced: set[str] = set()
        unknown: set[str] = set()  # ids whose row holds a URL of no store we know
        id_list = sorted(ids)
        for start in range(0, len(id_list), 1000):
            with self.uow_factory() as uow:
                rows = uow.media.referenced(id_list[start : start + 1000])
            for vid, urls in rows.items():
                for url in urls:
                    if not url:
                        continue
                    key = self.store.key_for_url(url)
                    if key is None:
                        unknown.add(str(vid))
                    else:
                        referenced.add(key)
        if unknown:
            log.warning(
                "rows hold picture URLs this store does not recognise; their files are kept",
                rows=len(unknown),
                store=self.store.describe(),
            )
        return [
            key
            for key in keys
            if key not in referenced and not ((m := _KEY.match(key)) and m.group(1) in unknown)
        ]

    def gc(self, *, apply: bool, min_age_s: float = ORPHAN_MIN_AGE_S) -> GcReport:
        rows, files = self.collect_garbage() if apply else (0, 0)
        orphans = self.find_orphans(min_age_s)
        if apply:
            files += sum(self.store.delete(key) for key in orphans)
        return GcReport(rows, files, orphans, apply)
