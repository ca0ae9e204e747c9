"""named operators and the operator_actions trail (issue 24.4)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 03:00:00+00:00

- ``operator_actions``: one row per change an operator made through the CLI or the
  console (replay, purge, pause, erase...) and per console read of a person's entry
  text: who, from where, what, its target, how many rows or messages it touched, when.
  Append-only; ``emotionviz audit`` reads it newest first (the ``at`` index).
- ``operators``: named operator tokens (``emotionviz operator add NAME --scope``), each
  stored as the SHA-256 of a random 32-byte token (never the token); a revoked token
  keeps its row (``revoked_at``), and a name is unique among the live ones.
- ``paused_queues`` (issue 24.3): the queues an operator paused, the truth the workers'
  Redis mirror is rebuilt from (workers/operations/pauses.py).
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
    op.execute(
        """
        CREATE TABLE operators (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            name text NOT NULL CONSTRAINT operators_name_check CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$'),
            scope text NOT NULL CONSTRAINT operators_scope_check CHECK (scope IN ('read', 'write')),
            token_sha256 text NOT NULL CONSTRAINT operators_token_sha256_check CHECK (token_sha256 ~ '^[0-9a-f]{64}$'),
            created_at timestamptz NOT NULL DEFAULT now(),
            created_by text NOT NULL,
            revoked_at timestamptz,
            CONSTRAINT operators_token_sha256_key UNIQUE (token_sha256)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX uq_operators_live_name ON operators (name) WHERE revoked_at IS NULL"
    )
    op.execute(
        """
        CREATE TABLE paused_queues (
            name text PRIMARY KEY CONSTRAINT paused_queues_name_check CHECK (length(name) >= 1 AND length(name) <= 100),
            paused_at timestamptz NOT NULL DEFAULT now(),
            paused_by text NOT NULL,
            reason text CONSTRAINT paused_queues_reason_check CHECK (length(reason) <= 500)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE paused_queues")
    op.execute("DROP TABLE operators")
    op.execute("DROP TABLE operator_actions")
