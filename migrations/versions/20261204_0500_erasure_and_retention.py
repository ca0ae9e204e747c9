"""erasure tombstones and retention (issue 24.5)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 00:00:00+00:00

- ``erased_users``: one tombstone per person erased with ``emotionviz user erase``:
  the SHA-256 of the person's id (never the id itself: a dump must not name an erased
  person), when, and the erasure's counts (numbers only, no text). ``emotionviz
  restore`` reads them before it replaces the database and applies them again after,
  so a restored older backup cannot bring the person back.
- ``idx_visualizations_raw_responses``: the completed rows that still hold a model's
  raw response (beyond what the product reads), by completion time: the retention
  purge (RETENTION_RAW_RESPONSES_DAYS) walks it a batch at a time and a purged row
  leaves it, so each run reads only what is left to do. Failed rows by age are served
  by ``idx_visualizations_failed_at`` (0004), operator actions by ``idx_operator_actions_at``.
- ``idx_completion_events_payload_user``: completion events by the person their
  payload names (``payload->>'user_id'``), so an erasure finds theirs without reading
  the whole outbox (db/repositories/erase.py).

The indexes are built CONCURRENTLY (the tables may be large: writes go on meanwhile),
outside the migration's transaction: if a build fails, the table is committed and the
revision not recorded, and running the upgrade again finishes it (hence IF NOT EXISTS
everywhere, and an interrupted build's INVALID index dropped first).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What a completed row keeps of its raw responses: the analysis checkpoint and the
# picture's facts (db/repositories/retention.py spells the same expression).
RAW_LEFT = (
    "status = 'completed' AND ((gemini_analysis - 'analysis') <> '{}'::jsonb "
    "OR (nanobanana_response - '{width,height,bytes,mime_type}'::text[]) <> '{}'::jsonb)"
)


INDEXES = {
    "idx_visualizations_raw_responses": (
        f"ON visualizations (processing_completed_at) WHERE {RAW_LEFT}"
    ),
    "idx_completion_events_payload_user": "ON completion_events ((payload ->> 'user_id'))",
}

# An interrupted CONCURRENTLY build leaves an INVALID index that IF NOT EXISTS would keep
# (and the planner never uses): drop it first.
DROP_IF_INVALID = """
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
               WHERE c.relname = '{name}' AND NOT i.indisvalid) THEN
        EXECUTE 'DROP INDEX {name}';
    END IF;
END $$
"""


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE IF NOT EXISTS erased_users (
            user_digest bytea NOT NULL,
            erased_at timestamptz NOT NULL DEFAULT now(),
            report jsonb NOT NULL DEFAULT '{}'::jsonb,
            CONSTRAINT erased_users_pkey PRIMARY KEY (user_digest),
            CONSTRAINT erased_users_user_digest_check CHECK (length(user_digest) = 32)
        )
        """
    )
    with op.get_context().autocommit_block():
        for name, definition in INDEXES.items():
            op.execute(DROP_IF_INVALID.format(name=name))
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS erased_users")
