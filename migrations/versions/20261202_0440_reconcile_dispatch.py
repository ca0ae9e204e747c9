"""reconcile dispatch: what the reconciler sent and when, entries that arrived without a row

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 04:40:00+00:00

- ``visualizations.dispatched_at``: when a message for the row was last sent (or its
  retry is due), so the reconciler republishes at most once per grace window and never
  while a quota delay is waited out. A stable default: PostgreSQL stores it once for
  the existing rows (no table rewrite).
- ``entry_arrivals``: entries inserted (by anyone) and not yet seen with a row; filled by
  a statement-level trigger, emptied by the claim and the reconciler. It replaces the
  reconciler's anti-join over every entry, which walked the whole table.
- A partial index over the pending rows by dispatch time drives the reconciler's main
  read (built CONCURRENTLY: the table may be large); its read of processing rows goes
  through the status index (few rows: those in flight).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECORD_ARRIVALS = """
CREATE FUNCTION record_entry_arrivals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO entry_arrivals (entry_id, user_id)
    SELECT id, user_id FROM arrived
    ON CONFLICT (entry_id) DO NOTHING;
    RETURN NULL;
END;
$$
"""


def upgrade() -> None:
    op.add_column(
        "visualizations",
        sa.Column(
            "dispatched_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
    )
    op.create_table(
        "entry_arrivals",
        sa.Column("entry_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column(
            "arrived_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["emotion_entries.id"],
            name=op.f("entry_arrivals_entry_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("entry_arrivals_pkey")),
    )
    op.create_index("idx_entry_arrivals_arrived_at", "entry_arrivals", ["arrived_at"])
    op.execute(RECORD_ARRIVALS)
    op.execute(
        "CREATE TRIGGER emotion_entries_record_arrivals AFTER INSERT ON emotion_entries "
        "REFERENCING NEW TABLE AS arrived FOR EACH STATEMENT "
        "EXECUTE FUNCTION record_entry_arrivals()"
    )
    # Entries that had no row before this revision are adopted by the first reconcile.
    op.execute(
        "INSERT INTO entry_arrivals (entry_id, user_id, arrived_at) "
        "SELECT e.id, e.user_id, e.created_at FROM emotion_entries e "
        "WHERE NOT EXISTS (SELECT 1 FROM visualizations v WHERE v.entry_id = e.id)"
    )
    with op.get_context().autocommit_block():
        op.execute(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_visualizations_pending_dispatch "
            "ON visualizations (dispatched_at) WHERE status = 'pending'"
        )


def downgrade() -> None:
    op.drop_index("idx_visualizations_pending_dispatch", table_name="visualizations")
    op.execute("DROP TRIGGER IF EXISTS emotion_entries_record_arrivals ON emotion_entries")
    op.execute("DROP FUNCTION IF EXISTS record_entry_arrivals()")
    op.drop_index("idx_entry_arrivals_arrived_at", table_name="entry_arrivals")
    op.drop_table("entry_arrivals")
    op.drop_column("visualizations", "dispatched_at")
