"""analytics follow entry edits and deletes: a trigger on emotion_entries queues the
(person, day) of every deleted or edited entry in analytics_refresh_queue, in the
upstream's own transaction; the maintenance pass refreshes those periods
(workers/services/analytics.py: drain_analytics_refresh_queue) and deletes the rows

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 04:42:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SECURITY DEFINER (with a fixed search_path): an upstream role that may write
# emotion_entries but not this queue must not see its deletes and edits refused.
# Statement-level triggers with transition tables, like media garbage's outbox but once
# per statement: a bulk delete or edit queues each (person, UTC day) once, not once per
# row. A person who is being deleted (the entries go by cascade after the users row) is
# not queued: their analytics rows go with them, as a deleted visualization's pictures
# go to media_garbage only when it had pictures.
QUEUE_ON_DELETE = """
CREATE FUNCTION queue_analytics_refresh_on_delete() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO analytics_refresh_queue (user_id, day)
    SELECT DISTINCT o.user_id, (o.created_at AT TIME ZONE 'UTC')::date
    FROM gone o
    WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = o.user_id);
    RETURN NULL;
END;
$$
"""

# An edit queues the old and the new (person, day) when a column the analytics read
# changed (emotions, intensity, created_at, user_id); other edits (situation, notes, the
# updated_at trigger) queue nothing. (PostgreSQL allows no column list on a trigger with
# transition tables, hence the comparison.)
QUEUE_ON_UPDATE = """
CREATE FUNCTION queue_analytics_refresh_on_update() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO analytics_refresh_queue (user_id, day)
    SELECT DISTINCT x.user_id, (x.created_at AT TIME ZONE 'UTC')::date
    FROM before_rows o
    JOIN after_rows n ON n.id = o.id
    CROSS JOIN LATERAL (VALUES (o.user_id, o.created_at), (n.user_id, n.created_at))
        AS x(user_id, created_at)
    WHERE (o.emotions, o.intensity, o.created_at, o.user_id)
          IS DISTINCT FROM (n.emotions, n.intensity, n.created_at, n.user_id)
      AND EXISTS (SELECT 1 FROM users u WHERE u.id = x.user_id);
    RETURN NULL;
END;
$$
"""


def upgrade() -> None:
    # No foreign key: a row may outlive its person (deleted after it was queued), and
    # the drain then simply finds nothing to refresh.
    op.create_table(
        "analytics_refresh_queue",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("analytics_refresh_queue_pkey")),
    )
    op.execute(QUEUE_ON_DELETE)
    op.execute(QUEUE_ON_UPDATE)
    op.execute(
        "CREATE TRIGGER emotion_entries_queue_analytics_refresh_on_delete "
        "AFTER DELETE ON emotion_entries REFERENCING OLD TABLE AS gone "
        "FOR EACH STATEMENT EXECUTE FUNCTION queue_analytics_refresh_on_delete()"
    )
    op.execute(
        "CREATE TRIGGER emotion_entries_queue_analytics_refresh_on_update "
        "AFTER UPDATE ON emotion_entries "
        "REFERENCING OLD TABLE AS before_rows NEW TABLE AS after_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION queue_analytics_refresh_on_update()"
    )


def downgrade() -> None:
    op.execute(
        "DROP TRIGGER IF EXISTS emotion_entries_queue_analytics_refresh_on_update "
        "ON emotion_entries"
    )
    op.execute(
        "DROP TRIGGER IF EXISTS emotion_entries_queue_analytics_refresh_on_delete "
        "ON emotion_entries"
    )
    op.execute("DROP FUNCTION IF EXISTS queue_analytics_refresh_on_update()")
    op.execute("DROP FUNCTION IF EXISTS queue_analytics_refresh_on_delete()")
    op.drop_table("analytics_refresh_queue")
