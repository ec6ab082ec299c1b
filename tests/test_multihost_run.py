"""``cauce run`` on one host, its history in PostgreSQL on another (as a team shares one
history, docs/running.md), when the link between them goes down: for a few seconds and for
longer than a connection's time limit (nothing is lost), and for good (the job stops in bounded
time, saying why, leaving nothing running)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import multihost_net as net
from helpers import ROOT
from multihost_fixtures import bare_hosts
from postgres_fixtures import PostgresServer, on_host

pytestmark = pytest.mark.slow

EPOCHS_SHORT = 100  # about 12 s of a job, with 0.1 s between two epochs
EPOCHS_MEDIUM = 450  # about 55 s
EPOCHS_LONG = 1000  # longer than the test waits


@pytest.fixture(scope="module")
def hosts() -> Iterator[net.Names]:
    """Namespaces only: ``s3`` holds the database, ``w1`` runs the job."""
    yield from bare_hosts("r", 8, 1)


@pytest.fixture
def database(hosts: net.Names) -> Iterator[tuple[PostgresServer, str]]:
    with on_host(hosts.address("s3"), hosts.ns("s3")) as found:
        yield found


def _run(
    hosts: net.Names, url: str, folder: Path, epochs: int, lost_after: int = 60
) -> subprocess.Popen[str]:
    shutil.copy(ROOT / "examples" / "tune" / "train.py", folder / "train.py")
    (folder / "job.yaml").write_text(
        "name: cut\n"
        f"command: python train.py --epochs {epochs} --samples 1000 --epoch-delay 0.1\n"
        "roles: {worker: {resources: {cpus: 0.5}}}\n"
        "grace_period: 3\n",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env |= {
        "CAUCE_HOME": str(folder / "home"),
        "CAUCE_LEASE_DIR": str(folder / "leases"),
        "CAUCE_HISTORY": url,
        "CAUCE_LOST_AFTER": str(lost_after),  # also how long its writes are tried again
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "cauce", "run", str(folder / "job.yaml")]
    return subprocess.Popen(
        ["ip", "netns", "exec", hosts.ns("w1"), *argv],
        env=env,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _metrics(server: PostgresServer, url: str) -> tuple[str, str | None, int]:
    """The job's status and root cause, and how many epochs it has in the history."""
    name = url.rsplit("/", 1)[1]
    [(job_id, status, cause)] = server.execute(name, "SELECT id, status, root_cause FROM jobs")
    [(epochs,)] = server.execute(
        name, f"SELECT count(*) FROM metrics WHERE job_id = '{job_id}' AND name = 'val_loss'"
    )
    return status, cause, int(epochs)


def test_a_short_cut_delays_the_history_and_loses_nothing(
    hosts: net.Names, database: tuple[PostgresServer, str], tmp_path: Path
) -> None:
    """The link down for 5 s in the middle of the job: TCP carries the writes over once it is
    back (well within the connections' 30 s limit), and the job ends as if nothing happened."""
    server, url = database
    run = _run(hosts, url, tmp_path, EPOCHS_SHORT)
    out, err = _cut(hosts, run, after=3, down=5, timeout=120)
    assert run.returncode == 0, out + err
    assert "stopped answering" not in err, err
    assert _metrics(server, url) == ("succeeded", None, EPOCHS_SHORT)


def test_a_job_rides_out_a_cut_longer_than_a_connections_time_limit(
    hosts: net.Names, database: tuple[PostgresServer, str], tmp_path: Path
) -> None:
    """The link down for 40 s: the write in flight fails after 30 s (the connection's limit),
    is tried again until the link is back, and the job ends as if nothing happened, every
    epoch recorded; the outage is said once, and its end."""
    server, url = database
    run = _run(hosts, url, tmp_path, EPOCHS_MEDIUM)
    out, err = _cut(hosts, run, after=4, down=40, timeout=180)
    assert run.returncode == 0, out + err
    assert err.count("does not answer") == 1 and "answers again" in err, err
    assert _metrics(server, url) == ("succeeded", None, EPOCHS_MEDIUM)


def test_a_job_cut_off_from_its_history_stops_in_bounded_time_saying_why(
    hosts: net.Names, database: tuple[PostgresServer, str], tmp_path: Path
) -> None:
    """The link down for good: the driver's next write fails once the connection's time limit
    (30 s) has passed, and is tried again for ``CAUCE_LOST_AFTER`` (15 s here); then the job
    stops with one line naming the database (no password, no traceback), and nothing is left
    on its host."""
    server, url = database
    run = _run(hosts, url, tmp_path, EPOCHS_LONG, lost_after=15)
    try:
        time.sleep(4)
        began = time.monotonic()
        net.ip("link", "set", hosts.link("w1"), "down")
        out, err = run.communicate(timeout=150)
        took = time.monotonic() - began
        left = net.emptied(hosts.ns("w1"))
    finally:
        net.ip("link", "set", hosts.link("w1"), "up")
        _kill(run)
    assert run.returncode == 1, out + err
    assert took < 100, took  # 30 s, 15 s more and a connection's 10 s (not TCP's 15 minutes)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stopped answering" in errors[0], err
    assert f"@{hosts.address('s3')}:{server.port}/" in errors[0], errors
    assert "run it again once the database answers" in errors[0], errors
    assert "Traceback" not in err and err.count("does not answer") == 1, err
    assert left == [], "processes left on the cut host"
    status, _, epochs = _metrics(server, url)
    assert status == "running" and 0 < epochs < EPOCHS_LONG, (status, epochs)


def _cut(
    hosts: net.Names, run: subprocess.Popen[str], *, after: float, down: float, timeout: float
) -> tuple[str, str]:
    """The job's host cut off ``after`` seconds for ``down`` seconds; the job's output once it
    has ended (killed if it has not within ``timeout``)."""
    try:
        time.sleep(after)
        net.ip("link", "set", hosts.link("w1"), "down")
        time.sleep(down)
        net.ip("link", "set", hosts.link("w1"), "up")
        return run.communicate(timeout=timeout)
    finally:
        net.ip("link", "set", hosts.link("w1"), "up")
        _kill(run)


def _kill(run: subprocess.Popen[str]) -> None:
    if run.poll() is None:
        run.kill()
        run.communicate()
