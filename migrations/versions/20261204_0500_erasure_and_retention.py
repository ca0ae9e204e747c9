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


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE erased_users (
            user_digest bytea NOT NULL,
            erased_at timestamptz NOT NULL DEFAULT now(),
            report jsonb NOT NULL DEFAULT '{}'::jsonb,
            CONSTRAINT erased_users_pkey PRIMARY KEY (user_digest),
            CONSTRAINT erased_users_user_digest_check CHECK (length(user_digest) = 32)
        )
        """
    )
    op.execute(
        "CREATE INDEX idx_visualizations_raw_responses ON visualizations "
        f"(processing_completed_at) WHERE {RAW_LEFT}"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_visualizations_raw_responses")
    op.execute("DROP TABLE IF EXISTS erased_users")
