"""named operators and the operator_actions trail (issue 24.4)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 03:00:00+00:00

- ``operator_actions``: one row per change an operator made through the CLI or the
  console (replay, purge, pause, erase...) and per console read of a person's entry
  text: who, from where, what, its target, how many rows or messages it touched, when.
  Append-only; ``emotionviz audit`` reads it newest first (the ``at`` index).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE operator_actions (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            operator text NOT NULL CONSTRAINT operator_actions_operator_check CHECK (length(operator) >= 1 AND length(operator) <= 200),
            source text NOT NULL CONSTRAINT operator_actions_source_check CHECK (source IN ('cli', 'console')),
            action text NOT NULL CONSTRAINT operator_actions_action_check CHECK (length(action) >= 1 AND length(action) <= 100),
            target text CONSTRAINT operator_actions_target_check CHECK (length(target) <= 1000),
            count bigint CONSTRAINT operator_actions_count_check CHECK (count >= 0),
            detail jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute("CREATE INDEX idx_operator_actions_at ON operator_actions (at DESC)")
    op.execute("CREATE INDEX idx_operator_actions_operator ON operator_actions (operator, at DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE operator_actions")
