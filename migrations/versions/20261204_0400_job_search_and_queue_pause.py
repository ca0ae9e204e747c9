"""job search: failure classes in SQL and indexes to find jobs at ten million rows
(issue 24.1-24.2; the file's name also reserved it for queue pauses, which need no
table)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 00:00:00+00:00

``emotionviz jobs list`` and the bulk ``replay`` filter by failure class, which is
derived from the stored reason (domain/failures.py) rather than stored: a column would
need every writer of ``error_message`` to fill it. So:

- ``visualization_failure_class(reason)``: domain/failures.py's ``failure_class`` in
  SQL, IMMUTABLE (an index may use it). The same markers in the same order;
  tests/integration/test_job_search.py checks both agree on every marker. A change to
  the Python classes needs a new revision that replaces this function and rebuilds the
  index.
- ``idx_visualizations_failed_class``: failed rows by class, newest first (the keyset
  order of the listing: created_at, id), so one class's page is a range.
- ``idx_visualizations_open_status``: the rows not completed (a few in every hundred) by
  status, newest first: "pending for more than ten minutes" is a range too. Completed
  rows are most of the table: the created_at index serves them.

Built CONCURRENTLY (the table may be large), outside the migration's transaction.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# domain/failures.py's _CLASSES as of this revision: a marker of digits is a whole
# number in the reason ("5000x5000" is not a 500), any other a substring (strpos, not
# LIKE: "_" in "resource_exhausted" is no wildcard).
CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("crash_loop", ("worker stopped",)),
    ("rate_limited", ("429", "quota", "rate limit", "resource_exhausted")),
    ("safety", ("safety", "blocked", "prohibited")),
    ("timeout", ("timeout", "timed out", "deadline", "time limit")),
    ("server_error", ("500", "502", "503", "504", "unavailable", "internal error")),
    (
        "invalid_output",
        ("unusable", "invalid output", "not valid json", "no image", "invalid image"),
    ),
    ("configuration", ("401", "403", "404", "api key", "permission", "_model")),
    ("request_rejected", ("(400", "invalid_argument", "request rejected")),
    ("database", ("database",)),
    ("not_found", ("does not exist", "not found")),
    ("gave_up", ("gave up",)),
)


def _test(marker: str) -> str:
    if marker.lstrip("(").isdigit():
        escaped = marker.replace("(", "\\(")
        return f"r ~ '(?<![0-9]){escaped}(?![0-9])'"
    return f"strpos(r, '{marker}') > 0"


def _function() -> str:
    arms = "\n".join(
        f"        WHEN {' OR '.join(_test(m) for m in markers)} THEN '{name}'"
        for name, markers in CLASSES
    )
    return f"""
CREATE OR REPLACE FUNCTION visualization_failure_class(reason text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
{arms}
        ELSE 'other'
    END
    FROM (SELECT lower(coalesce(reason, '')) AS r) AS reason_text
$$"""


INDEXES = {
    "idx_visualizations_failed_class": (
        "ON visualizations (visualization_failure_class(error_message), "
        "created_at DESC, id DESC) WHERE status = 'failed'"
    ),
    "idx_visualizations_open_status": (
        "ON visualizations (status, created_at DESC, id DESC) WHERE status <> 'completed'"
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
    op.execute(_function())
    with op.get_context().autocommit_block():
        for name, definition in INDEXES.items():
            op.execute(DROP_IF_INVALID.format(name=name))
            op.execute(f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} {definition}")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    op.execute("DROP FUNCTION IF EXISTS visualization_failure_class(text)")
