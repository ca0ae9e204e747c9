"""periodic reads: indexes for the operators' views and the metrics at ten million rows

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:41:00+00:00

What runs every few seconds (``status``, the console's overview, the metrics' shared
snapshot) must read the few rows that are recent or open, not the table
(docs/benchmarks.md has the figures on ten million entries):

- ``idx_visualizations_finished_at``: finished rows by completion time, with their
  status (index-only counts; with the status first, every range walked the whole
  index): the console's per-minute chart, the last hour's completed and failed counts,
  the last hour's failure reasons (a range each, instead of every finished row);
- ``idx_visualizations_failed_at``: failed rows newest failure first, the console's
  failures page (its first page was a sort of every failed row joined to its entry).

Built CONCURRENTLY (the table may be large: writes go on meanwhile), outside the
migration's transaction; IF NOT EXISTS so a build interrupted and dropped can be rerun.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "idx_visualizations_finished_at": (
        "ON visualizations (processing_completed_at) INCLUDE (status) "
        "WHERE status IN ('completed', 'failed')"
    ),
    "idx_visualizations_failed_at": (
        "ON visualizations ((coalesce(processing_completed_at, updated_at)) DESC, entry_id) "
        "WHERE status = 'failed'"
    ),
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
    with op.get_context().autocommit_block():
        for name, definition in INDEXES.items():
            op.execute(DROP_IF_INVALID.format(name=name))
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
