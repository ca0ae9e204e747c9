"""The retention purge's statements: one batch each, in the caller's transaction, each
served by an index (migration 0011 and earlier), so a run over a large table reads what
it purges and little else.

- raw responses (``idx_visualizations_raw_responses``): completed rows older than the
  cutoff keep, of their raw model responses, only what the product reads: the analysis
  checkpoint (``gemini_analysis.analysis``) and the picture's facts (width, height,
  bytes, mime type); summary, insights and visual elements are columns of their own;
- failed rows (``idx_visualizations_failed_at``): the visualization row is deleted, the
  person's entry stays (its picture files, if any, go through media_garbage);
- operator_actions (``idx_operator_actions_at``) and model_calls (``idx_model_calls_at``)
  older than the cutoff.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from db.uow import UnitOfWork

# The index predicate of idx_visualizations_raw_responses, spelled as the migration does
# (the planner uses a partial index only when the query implies its predicate).
RAW_LEFT = (
    "status = 'completed' AND ((gemini_analysis - 'analysis') <> '{}'::jsonb "
    "OR (nanobanana_response - '{width,height,bytes,mime_type}'::text[]) <> '{}'::jsonb)"
)
PICTURE_FACTS = ("width", "height", "bytes", "mime_type")

_RAW_BATCH = f"""
SELECT id FROM visualizations
WHERE {RAW_LEFT} AND processing_completed_at < :cutoff
ORDER BY processing_completed_at LIMIT :n FOR UPDATE SKIP LOCKED
"""
_FAILED_BATCH = """
SELECT id FROM visualizations
WHERE status = 'failed' AND coalesce(processing_completed_at, updated_at) < :cutoff
ORDER BY coalesce(processing_completed_at, updated_at) DESC LIMIT :n FOR UPDATE SKIP LOCKED
"""
_STATEMENTS = {
    "raw_responses": f"""
WITH batch AS ({_RAW_BATCH})
UPDATE visualizations v SET
  gemini_analysis = CASE WHEN v.gemini_analysis ? 'analysis'
    THEN jsonb_build_object('analysis', v.gemini_analysis -> 'analysis') END,
  nanobanana_response = CASE WHEN v.nanobanana_response IS NOT NULL THEN (
    SELECT coalesce(jsonb_object_agg(e.key, e.value), '{{}}'::jsonb)
    FROM jsonb_each(v.nanobanana_response) e WHERE e.key = ANY(:facts)) END
FROM batch WHERE v.id = batch.id
RETURNING v.entry_id
""",
    "failed_rows": f"""
WITH batch AS ({_FAILED_BATCH})
DELETE FROM visualizations v USING batch WHERE v.id = batch.id RETURNING v.entry_id
""",
    "operator_actions": """
DELETE FROM operator_actions WHERE id IN (
  SELECT id FROM operator_actions WHERE at < :cutoff ORDER BY at LIMIT :n
  FOR UPDATE SKIP LOCKED)
RETURNING NULL::uuid
""",
    "model_calls": """
DELETE FROM model_calls WHERE id IN (
  SELECT id FROM model_calls WHERE at < :cutoff ORDER BY at LIMIT :n
  FOR UPDATE SKIP LOCKED)
RETURNING NULL::uuid
""",
}
_COUNTS = {
    "raw_responses": f"SELECT count(*) FROM visualizations WHERE {RAW_LEFT} "
    "AND processing_completed_at < :cutoff",
    "failed_rows": "SELECT count(*) FROM visualizations WHERE status = 'failed' "
    "AND coalesce(processing_completed_at, updated_at) < :cutoff",
    "operator_actions": "SELECT count(*) FROM operator_actions WHERE at < :cutoff",
    "model_calls": "SELECT count(*) FROM model_calls WHERE at < :cutoff",
}
KINDS = tuple(_STATEMENTS)


@dataclass(frozen=True)
class Purged:
    rows: int
    entry_ids: list[uuid.UUID]  # the failed rows' entries (their dead letters go too)


class RetentionRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def purge_batch(self, kind: str, cutoff: datetime, limit: int) -> Purged:
        """Purge at most ``limit`` rows of ``kind`` older than ``cutoff``."""
        params: dict[str, Any] = {"cutoff": cutoff, "n": limit, "facts": list(PICTURE_FACTS)}
        rows = self.session.execute(text(_STATEMENTS[kind]), params).all()
        entries = [r[0] for r in rows if r[0] is not None] if kind == "failed_rows" else []
        return Purged(len(rows), entries)

    def due(self, kind: str, cutoff: datetime) -> int:
        """How many rows of ``kind`` a run would purge (the dry run)."""
        return int(self.session.execute(text(_COUNTS[kind]), {"cutoff": cutoff}).scalar_one())


def retention_repository(uow: UnitOfWork) -> RetentionRepository:
    """The repository on a unit of work's session."""
    return RetentionRepository(uow.session)
