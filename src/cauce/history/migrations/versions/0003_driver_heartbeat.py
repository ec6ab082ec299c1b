"""The driver's heartbeat: ``jobs.seen_at``, the time (its host's clock) a running job's driver
last said it lives, so that a job whose driver's host went down is seen as lost from any host
that shares the history. NULL for the jobs of older releases, which keep their status.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("seen_at", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("seen_at")
