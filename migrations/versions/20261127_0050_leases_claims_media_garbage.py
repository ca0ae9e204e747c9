"""leases, claim counts and media garbage: fast reclaim after a crash, a crash-loop cap,
and pictures removed with their rows

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 00:50:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A deleted visualization (directly, or through its entry or its user) leaves the id of
# its pictures here, in the same transaction; a worker deletes the files and the row.
QUEUE_MEDIA_GARBAGE = """
CREATE FUNCTION queue_media_garbage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO media_garbage (visualization_id) VALUES (OLD.id);
    RETURN OLD;
END;
$$
"""


def upgrade() -> None:
    op.add_column(
        "visualizations", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "visualizations",
        sa.Column("claim_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
    )
    op.create_check_constraint(
        "visualizations_claim_count_check", "visualizations", "claim_count >= 0"
    )
    # Existing processing rows keep their old lease until it runs out.
    op.execute(
        "UPDATE visualizations SET lease_expires_at = processing_started_at + interval '600 seconds' "
        "WHERE status = 'processing'"
    )
    op.create_table(
        "media_garbage",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("visualization_id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("media_garbage_pkey")),
    )
    op.execute(QUEUE_MEDIA_GARBAGE)
    op.execute(
        "CREATE TRIGGER visualizations_queue_media_garbage AFTER DELETE ON visualizations "
        "FOR EACH ROW WHEN (OLD.image_url IS NOT NULL OR OLD.thumbnail_url IS NOT NULL) "
        "EXECUTE FUNCTION queue_media_garbage()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS visualizations_queue_media_garbage ON visualizations")
    op.execute("DROP FUNCTION IF EXISTS queue_media_garbage()")
    op.drop_table("media_garbage")
    op.drop_constraint("visualizations_claim_count_check", "visualizations", type_="check")
    op.drop_column("visualizations", "claim_count")
    op.drop_column("visualizations", "lease_expires_at")
