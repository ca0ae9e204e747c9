"""periodic reads: indexes for the operators' views and the metrics at ten million rows

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 04:41:00+00:00
"""

from collections.abc import Sequence

from alembic import op  # noqa: F401

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
