"""reconcile dispatch: what the reconciler sent and when, entries that arrived without a row

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 04:40:00+00:00
"""

from collections.abc import Sequence

from alembic import op  # noqa: F401

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
