"""Metric values that are not finite: ``metrics.value`` may be NULL, and ``metrics.nonfinite``
says which of ``nan``, ``inf`` and ``-inf`` it was (SQL has no NaN; a diverging loss is kept).
Infinities stored by 0001 as floats (SQLite and PostgreSQL hold them) stay as they are: the
store reads both forms.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # SQLite cannot change a column's NOT NULL: batch mode copies the table (rows, index).
    with op.batch_alter_table("metrics") as batch:
        batch.alter_column("value", existing_type=sa.Float, nullable=True)
        batch.add_column(sa.Column("nonfinite", sa.String(4)))


def downgrade() -> None:
    op.execute("DELETE FROM metrics WHERE value IS NULL")  # 0001 could not hold them
    with op.batch_alter_table("metrics") as batch:
        batch.drop_column("nonfinite")
        batch.alter_column("value", existing_type=sa.Float, nullable=False)
