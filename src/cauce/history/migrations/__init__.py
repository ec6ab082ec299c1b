"""The history store's schema, as Alembic migrations run by the store itself when it opens.

Optuna keeps its tables (and its own ``alembic_version`` table) in the same database, so cauce's
revisions are recorded in ``cauce_alembic_version``. A store made before versions existed (no
version table, a ``jobs`` table) has revision ``0001``'s schema and is stamped with it.

To change the schema:

1. Add ``versions/NNNN_what.py`` with ``revision = "NNNN"``, ``down_revision`` = the current
   :data:`HEAD`, and ``upgrade()`` / ``downgrade()`` written with ``alembic.op`` (explicit
   columns, never the store's table objects, so that old revisions stay as they were).
2. Set :data:`HEAD` below to ``"NNNN"`` (a test checks that it is the scripts' head).
3. Change the tables in ``store.py`` to match, and add a test that opens a store of the previous
   revision.
"""

from __future__ import annotations

__all__ = ["HEAD", "VERSION_TABLE"]

#: The newest revision: a store at it is opened without loading Alembic.
HEAD = "0003"

VERSION_TABLE = "cauce_alembic_version"
