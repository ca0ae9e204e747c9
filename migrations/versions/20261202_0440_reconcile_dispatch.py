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

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SECURITY DEFINER (with a fixed search_path): an upstream role that may insert entries
# but not write this table must not see its inserts refused.
RECORD_ARRIVALS = """
CREATE OR REPLACE FUNCTION record_entry_arrivals() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO entry_arrivals (entry_id, user_id)
    SELECT id, user_id FROM arrived
    ON CONFLICT (entry_id) DO NOTHING;
    RETURN NULL;
END;
$$
"""

# Every step may run again: the index build below runs outside the migration's
# transaction (CONCURRENTLY), so a build that failed leaves the rest committed and the
# revision not recorded; running the upgrade again must then succeed.
STEPS = [
    "ALTER TABLE visualizations ADD COLUMN IF NOT EXISTS dispatched_at "
    "timestamp with time zone DEFAULT now() NOT NULL",
    "CREATE TABLE IF NOT EXISTS entry_arrivals ("
    " entry_id uuid NOT NULL,"
    " user_id uuid NOT NULL,"
    " arrived_at timestamp with time zone DEFAULT now() NOT NULL,"
    " CONSTRAINT entry_arrivals_pkey PRIMARY KEY (entry_id),"
    " CONSTRAINT entry_arrivals_entry_id_fkey FOREIGN KEY (entry_id)"
    " REFERENCES emotion_entries (id) ON DELETE CASCADE)",
    "CREATE INDEX IF NOT EXISTS idx_entry_arrivals_arrived_at ON entry_arrivals (arrived_at)",
    RECORD_ARRIVALS,
    "DROP TRIGGER IF EXISTS emotion_entries_record_arrivals ON emotion_entries",
    "CREATE TRIGGER emotion_entries_record_arrivals AFTER INSERT ON emotion_entries "
    "REFERENCING NEW TABLE AS arrived FOR EACH STATEMENT "
    "EXECUTE FUNCTION record_entry_arrivals()",
]

# Entries that had no row before this revision are adopted by the first reconciles. Run
# after the trigger is committed (so none is missed) and outside the DDL's transaction
# (so its read of every entry holds no lock that stops writers).
BACKFILL_ARRIVALS = (
    "INSERT INTO entry_arrivals (entry_id, user_id, arrived_at) "
    "SELECT e.id, e.user_id, e.created_at FROM emotion_entries e "
    "WHERE NOT EXISTS (SELECT 1 FROM visualizations v WHERE v.entry_id = e.id) "
    "ON CONFLICT (entry_id) DO NOTHING"
)

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
    for step in STEPS:
        op.execute(step)
    with op.get_context().autocommit_block():
        op.execute(BACKFILL_ARRIVALS)
        op.execute(DROP_IF_INVALID.format(name="idx_visualizations_pending_dispatch"))
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
