"""One study, two tuners on two hosts, its database on a third: as a team shares a study through
PostgreSQL (docs/tuning.md). Each host is a network namespace with a host name of its own (a UTS
namespace per tuner), so a tuner cannot tell from its process table whether the other lives.

When one tuner's host is cut off from the database, that tuner fails in bounded time with one
clear line (not after TCP's quarter of an hour, not with a traceback) and leaves no process; the
other takes the cut tuner's trial over once its heartbeat stops, and finishes the study.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import multihost_net as net
from helpers import ROOT
from multihost_fixtures import bare_hosts
from postgres_fixtures import PostgresServer, on_host

pytestmark = pytest.mark.slow

TARGET = 8
LOST_AFTER = "10"  # seconds: CAUCE_LOST_AFTER, 60 by default


@pytest.fixture(scope="module")
def hosts() -> Iterator[net.Names]:
    """Namespaces only (no Spark): ``s3`` holds the database, ``w1`` and ``w2`` the tuners."""
    if shutil.which("unshare") is None:
        pytest.skip("a host name per tuner needs unshare (util-linux)")
    yield from bare_hosts("t", 7, 2)


@pytest.fixture
def database(hosts: net.Names) -> Iterator[tuple[PostgresServer, str]]:
    with on_host(hosts.address("s3"), hosts.ns("s3")) as found:
        yield found


def _job(folder: Path) -> Path:
    """examples/tune's study, its trials long enough (about 3 s) to be cut in the middle of
    one, and not pruned."""
    folder.mkdir()
    shutil.copy(ROOT / "examples" / "tune" / "train.py", folder / "train.py")
    spec = yaml.safe_load((ROOT / "examples" / "tune" / "job.yaml").read_text(encoding="utf-8"))
    spec["command"] = "python train.py --epochs 30 --samples 1000 --epoch-delay 0.1"
    spec["tune"]["pruner"] = {"type": "none"}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _tuner(hosts: net.Names, role: str, job: Path, url: str, folder: Path) -> subprocess.Popen[str]:
    """``cauce tune`` on host ``role``: its namespace, its own host name, home and leases."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env |= {
        "CAUCE_HOME": str(folder / role / "home"),
        "CAUCE_LEASE_DIR": str(folder / role / "leases"),
        "CAUCE_HISTORY": url,
        "CAUCE_LOST_AFTER": LOST_AFTER,
        "PYTHONUNBUFFERED": "1",
    }
    argv = [sys.executable, "-m", "cauce", "tune", str(job), "--trials", str(TARGET)]
    named = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hosts.ns(role)]
    return subprocess.Popen(
        ["ip", "netns", "exec", hosts.ns(role), *named, *argv, "--parallel", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_tuner_cut_off_from_the_database_fails_and_the_other_takes_its_trial_over(
    hosts: net.Names, database: tuple[PostgresServer, str], tmp_path: Path
) -> None:
    server, url = database
    name = url.rsplit("/", 1)[1]
    job = _job(tmp_path / "job")
    tuners = {role: _tuner(hosts, role, job, url, tmp_path) for role in ("w1", "w2")}
    cut = tuners["w2"]
    try:
        assert cut.stdout is not None
        seen = ""
        while " running: " not in seen:  # its first trial has started
            line = cut.stdout.readline()
            assert line, f"w2's tuner ended before a trial ran: {seen}{cut.communicate()[1]}"
            seen += line
        time.sleep(1.0)  # in the middle of that trial (about 3 s)
        net.ip("link", "set", hosts.link("w2"), "down")

        # The cut tuner: a clear failure, in bounded time, and nothing left running on its host.
        out, err = cut.communicate(timeout=150)
        assert cut.returncode == 1, seen + out + err
        assert "stopped answering" in err and "retries them" in err, err
        assert f"@{hosts.address('s3')}:{server.port}/{name}" in err, err
        assert "Traceback" not in err, err
        assert net.emptied(hosts.ns("w2")) == [], "processes left on the cut host"

        # The other finishes the study, the cut trial retried once its heartbeat stopped.
        out, err = tuners["w1"].communicate(timeout=300)
        assert tuners["w1"].returncode == 0, out + err
        assert "taken over, their tuner gone; retrying them" in err, err
    finally:
        net.ip("link", "set", hosts.link("w2"), "up")
        for tuner in tuners.values():
            if tuner.poll() is None:
                tuner.kill()
                tuner.communicate()

    trials = server.execute(
        name,
        "SELECT t.number, t.state, a.key, a.value_json FROM trials t "
        "LEFT JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
        "AND a.key IN ('root_cause', 'cauce_run') ORDER BY t.number",
    )
    states = {number: state for number, state, _, _ in trials}
    assert sum(state == "COMPLETE" for state in states.values()) >= TARGET, trials
    assert "RUNNING" not in states.values(), trials
    [(taken, cause)] = [(n, v) for n, s, k, v in trials if s == "FAIL" and k == "root_cause"]
    assert "sent no heartbeat for 10 s" in cause and hosts.ns("w2") in cause, cause
    ran_by = {n: v for n, _, k, v in trials if k == "cauce_run"}
    assert f'"tuner": "{hosts.ns("w2")}:' in ran_by[taken], ran_by[taken]
    hosts_of = {v.split('"tuner": "')[1].split(":")[0] for v in ran_by.values()}
    assert hosts_of == {hosts.ns("w1"), hosts.ns("w2")}, ran_by
    # the trial's job, in the shared history: lost, saying why
    job_id = ran_by[taken].split('"job_id": "')[1].split('"')[0]
    [(status, root_cause)] = server.execute(
        name, f"SELECT status, root_cause FROM jobs WHERE id = '{job_id}'"
    )
    assert status == "lost" and "sent no heartbeat" in root_cause, (status, root_cause)
