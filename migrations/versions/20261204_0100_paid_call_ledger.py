"""paid-call ledger: one row per paid model attempt (issue 23.3)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 00:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op  # noqa: F401

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
