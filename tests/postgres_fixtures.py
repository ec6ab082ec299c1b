"""A real PostgreSQL server for the tests that keep history and studies in it.

``postgres``: the server, started once per worker from PostgreSQL's own ``initdb`` and
``pg_ctl`` (Debian's ``postgresql`` package; ``scripts/setup.sh`` installs it) in a folder of its
own, on 127.0.0.1 and a free port, ``trust`` authentication, no fsync; as the ``postgres`` user
when the tests run as root (PostgreSQL refuses root). Stopped and its folder removed at the end.
``postgres_url``: a new database on it for one test, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import free_port

USER = "cauce"


def _program(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version)
    return versions[-1] if versions else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


@dataclass
class PostgresServer:
    port: int
    folder: Path

    def url(self, database: str, password: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"postgresql+psycopg://{USER}{secret}@127.0.0.1:{self.port}/{database}"

    def execute(self, database: str, statement: str) -> list[tuple[Any, ...]]:
        """Run one SQL statement outside a transaction; its rows, if any."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=USER, dbname=database, autocommit=True
        ) as conn:
            cursor = conn.execute(statement.encode())
            return list(cursor.fetchall()) if cursor.description else []

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A new database, its URL; dropped at exit."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.execute("postgres", f"CREATE DATABASE {name}")
        try:
            yield self.url(name)
        finally:
            self.execute("postgres", f"DROP DATABASE {name} WITH (FORCE)")


def _run(argv: list[str], as_user: list[str]) -> None:
    done = subprocess.run(
        as_user + argv, capture_output=True, text=True, timeout=120, cwd="/", check=False
    )
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg", reason="the postgres extra: pip install 'cauce[postgres]'")
    initdb, pg_ctl = _program("initdb"), _program("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip(
            "no PostgreSQL server: scripts/setup.sh installs it (apt-get install postgresql)"
        )
    # A short path of its own: the server's Unix socket goes there too (at most 107 bytes).
    folder = Path(tempfile.mkdtemp(prefix="cauce-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    server = PostgresServer(free_port(), folder)
    options = (
        f"-c listen_addresses=127.0.0.1 -p {server.port} -k {folder} "
        "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
    )
    started = False
    try:
        _run(
            [initdb, "-D", str(data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync"], as_user
        )
        _run([pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-t", "60",
              "-o", options, "start"], as_user)  # fmt: skip
        started = True
        yield server
    finally:
        if started:
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], as_user)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    with postgres.database() as url:
        yield url
