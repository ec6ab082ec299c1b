"""Alembic's entry for the history migrations; run only by ``cauce.history._migrate``, on the
connection (and inside the transaction) it passes in ``config.attributes``."""

from __future__ import annotations

from alembic import context

from cauce.history.migrations import VERSION_TABLE

context.configure(
    connection=context.config.attributes["connection"],
    version_table=VERSION_TABLE,
    transactional_ddl=True,
)
with context.begin_transaction():
    context.run_migrations()
