"""Bring a history database to the newest schema when a store opens it (see ``migrations/``).

A store at :data:`~cauce.history.migrations.HEAD` costs one query and no Alembic import. Else
the migration runs in one transaction that holds the database's write lock (SQLite:
``BEGIN IMMEDIATE``; PostgreSQL: an advisory lock), so that drivers opening a new store at the
same moment wait for each other instead of creating the tables twice.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Connection, Engine

from cauce._util.locks import FileLock
from cauce.history._url import connect_args
from cauce.history.migrations import HEAD, VERSION_TABLE

__all__ = ["current_revision", "migrate", "schema_lock"]

logger = logging.getLogger(__name__)

_SCRIPTS = Path(__file__).with_name("migrations")
_BEFORE_VERSIONS = "0001"  # the schema of stores made before the version table existed
_PG_LOCK = 0x6361_7563_6500  # an arbitrary advisory lock key: "cauce"


def current_revision(conn: Connection) -> str | None:
    """The database's revision; None when it has no version table."""
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    row = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).first()
    return None if row is None else str(row[0])


def migrate(engine: Engine) -> None:
    """Upgrade the database of ``engine`` to :data:`HEAD`, stamping a store made before versions
    with the schema it has. Raises SQLAlchemy's errors."""
    with engine.connect() as conn:
        if current_revision(conn) == HEAD:
            return
    with _locked(engine) as conn:
        current = current_revision(conn)  # again: another process may have migrated meanwhile
        if current == HEAD:
            return
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_SCRIPTS))
        config.attributes["connection"] = conn
        if current is None and sa.inspect(conn).has_table("jobs"):
            logger.info("history store of cauce 0.1.0: stamping revision %s", _BEFORE_VERSIONS)
            command.stamp(config, _BEFORE_VERSIONS)
        logger.info("history store at revision %s: upgrading to %s", current, HEAD)
        command.upgrade(config, "head")


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the database's write lock, committed at exit."""
    in_memory = engine.url.database in (None, "", ":memory:")
    if engine.dialect.name != "sqlite" or in_memory:  # one connection: no one to wait for
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK})
            yield conn
        return
    # pysqlite opens transactions itself, late and not for DDL; take that over, for this
    # engine only, so that the whole migration is one transaction that starts with the lock.
    own = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)

    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA busy_timeout=30000")

    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    sa_event.listen(own, "connect", _connect)
    sa_event.listen(own, "begin", _begin)
    try:
        with own.begin() as conn:
            yield conn
    finally:
        own.dispose()


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Hold the database's schema lock while another library makes its tables in the database
    of ``url`` (Optuna's, beside the history's): two tuners opening a new database at the same
    moment otherwise both create them, and one fails (PostgreSQL: a duplicate type; SQLite:
    "table studies already exists"). PostgreSQL: the advisory lock of the migrations; SQLite:
    an ``flock`` on the database's folder. Never on the file itself: closing any descriptor of
    it would drop the ``fcntl`` locks of this process's SQLite connections."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or not os.path.isfile(path):
            yield  # no file to share: no one else to wait for
            return
        try:
            lock = FileLock.wait(os.path.dirname(os.path.abspath(path)))
        except OSError:  # a folder this user may not open: go on unguarded, as before
            yield
            return
        with lock:
            yield
        return
    if parsed.get_backend_name() != "postgresql":
        yield
        return
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args=connect_args(url))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK})
    finally:
        engine.dispose()
