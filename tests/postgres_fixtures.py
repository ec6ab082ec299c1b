"""A real PostgreSQL server for the tests that keep history and studies in it.

``postgres``: the server, started once per worker with PostgreSQL's own ``initdb`` and
``postgres`` programs (Debian's ``postgresql`` package; ``scripts/setup.sh`` installs it) in a
folder of its own, on 127.0.0.1 and a free port, ``trust`` authentication, no fsync; as the
``postgres`` user when the tests run as root (PostgreSQL refuses root). Stopped and its folder
removed at the end.
``postgres_url``: a new database on it for one test, dropped afterwards.
``running``: a server of a test's own, for example on a namespaced host's address.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import SESSION_GROUPS, free_port

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
    folder: Path  # its data, log and Unix socket
    host: str = "127.0.0.1"  # where clients reach it over TCP
    #: Stop the server (a fast shutdown, as a restart by an operator) and start it again on the
    #: same data after ``down`` seconds; set by :func:`running`.
    restart: Callable[[float], None] = field(default=lambda down: None, repr=False)

    def url(self, database: str, password: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"postgresql+psycopg://{USER}{secret}@{self.host}:{self.port}/{database}"

    def connect(self, database: str, **kwargs: Any) -> Any:
        """A connection through the server's Unix socket: a file, reachable from every network
        namespace of this machine, whatever address the server listens on."""
        import psycopg

        return psycopg.connect(
            host=str(self.folder), port=self.port, user=USER, dbname=database, **kwargs
        )

    def execute(self, database: str, statement: str) -> list[tuple[Any, ...]]:
        """Run one SQL statement outside a transaction; its rows, if any."""
        with self.connect(database, autocommit=True) as conn:
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


@contextlib.contextmanager
def running(
    host: str = "127.0.0.1", *, within: Sequence[str] = (), clients: str = ""
) -> Iterator[PostgresServer]:
    """A PostgreSQL server listening on ``host``, started with ``within`` before its command
    (``ip netns exec NS``: on a namespaced host), trusting connections from 127.0.0.1 and from
    the network ``clients`` (``10.213.0.0/24``); stopped and its folder removed at exit. Skips
    the test, saying why, where the server or psycopg is missing."""
    pytest.importorskip("psycopg", reason="the postgres extra: pip install 'cauce[postgres]'")
    initdb, server_program = _program("initdb"), _program("postgres")
    if initdb is None or server_program is None:
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
    server = PostgresServer(free_port(), folder, host)
    argv = [server_program, "-D", str(data), "-p", str(server.port), "-k", str(folder)]
    for setting in (f"listen_addresses={host}", "fsync=off", "full_page_writes=off"):
        argv += ["-c", setting]
    processes: list[subprocess.Popen[bytes]] = []  # the one running, if any

    def start() -> None:
        # In the foreground, a child of this process in a group of its own (not pg_ctl's
        # daemon, which init would have to reap): stopped by its group, waited for.
        with open(folder / "server.log", "ab") as log:
            process = subprocess.Popen(
                [*within, *as_user, *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd="/",
                start_new_session=True,
            )
        processes.append(process)
        SESSION_GROUPS.add(process.pid)  # its workers are in groups of their own, below it
        _wait_ready(server, process)

    def restart(down: float) -> None:
        _stop(processes.pop())
        time.sleep(down)
        start()

    server.restart = restart
    try:
        _run(
            [initdb, "-D", str(data), "-A", "trust", "-U", USER, "-E", "UTF8", "--no-sync"], as_user
        )
        if clients:
            with open(data / "pg_hba.conf", "a", encoding="utf-8") as hba:
                hba.write(f"host all all {clients} trust\n")
        start()
        yield server
    finally:
        for process in processes:
            _stop(process)
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def on_host(address: str, ns: str) -> Iterator[tuple[PostgresServer, str]]:
    """A server on the namespaced host ``ns`` (listening on its ``address``, trusting that
    address's /24) and a new database on it: the server and the database's URL."""
    subnet = address.rsplit(".", 1)[0] + ".0/24"
    server = running(address, within=["ip", "netns", "exec", ns], clients=subnet)
    with server as started, started.database() as url:
        yield started, url


def _wait_ready(server: PostgresServer, process: subprocess.Popen[bytes]) -> None:
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        try:
            server.connect("postgres", connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            log_text = (server.folder / "server.log").read_text(errors="replace")
            assert process.poll() is None, f"PostgreSQL did not start:\n{log_text}"
            assert time.monotonic() < deadline, f"PostgreSQL not ready in 60 s:\n{log_text}"
            time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A server for the worker's session, on 127.0.0.1."""
    with running() as server:
        yield server


def _stop(process: subprocess.Popen[bytes]) -> None:
    """A fast shutdown (SIGINT to its group: the server stops its workers), then SIGKILL if it
    takes over 30 s (the workers end when they see the server gone)."""
    for sig, grace in ((signal.SIGINT, 30.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    SESSION_GROUPS.discard(process.pid)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    with postgres.database() as url:
        yield url
