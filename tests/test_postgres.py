"""History and studies in PostgreSQL, as a team keeps them (``CAUCE_HISTORY``), through the CLI:
a study whose trials run as jobs, listed by ``cauce jobs``, ``cauce trials`` and ``cauce show``
and served by ``cauce ui`` from the same database, with the URL's password never shown."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from helpers import ROOT, cauce, cauce_popen, free_port, gone, stop
from postgres_fixtures import PostgresServer, running

PASSWORD = "s3cret-word"  # the server trusts 127.0.0.1: any password is accepted, none checked


def test_a_study_in_postgres_is_listed_from_it_and_its_password_never_shown(
    postgres: PostgresServer, cauce_env: dict[str, str], tmp_path: Path
) -> None:
    with postgres.database() as url:
        name = url.rsplit("/", 1)[1]
        env = {**cauce_env, "CAUCE_HISTORY": postgres.url(name, PASSWORD)}
        empty = cauce(["jobs"], env)
        assert empty.returncode == 0, empty.stderr
        assert "no jobs yet in postgresql+psycopg://cauce:***@127.0.0.1" in empty.stdout
        job = ROOT / "examples" / "tune" / "job.yaml"
        tuned = cauce(["tune", str(job), "--trials", "3", "--parallel", "2"], env, timeout=300)
        assert tuned.returncode == 0, tuned.stderr
        assert "3 trials done" in tuned.stdout, tuned.stdout

        # Optuna's tables and cauce's in the one database, written by the trials' processes too
        tables = {row[0] for row in postgres.execute(name, "SELECT tablename FROM pg_tables")}
        assert {"jobs", "tasks", "metrics", "studies", "trials"} <= tables, tables
        trials = json.loads(cauce(["trials", "spirals", "--format", "json"], env).stdout)
        assert len(trials) == 3 and {t["state"] for t in trials} <= {"complete", "pruned"}
        listed = cauce(["jobs"], env)
        assert listed.returncode == 0, listed.stderr
        jobs = [t["job_id"] for t in trials]
        assert all(j in listed.stdout for j in jobs), listed.stdout
        shown = cauce(["show", jobs[0]], env)
        assert shown.returncode == 0 and jobs[0] in shown.stdout, shown.stderr
        [(reported,)] = postgres.execute(
            name, f"SELECT count(*) FROM metrics WHERE job_id = '{jobs[0]}'"
        )
        assert reported > 0

        # the portal's pages and the JSON its charts load, from the same database
        portal = cauce_popen(["ui", "--port", "0"], env)
        try:
            assert portal.stdout is not None
            url = portal.stdout.readline().split()[2]
            jobs_page = httpx.get(f"{url}/jobs", timeout=30)
            assert jobs_page.status_code == 200 and jobs[0] in jobs_page.text
            study = httpx.get(f"{url}/studies/spirals", timeout=30)
            assert study.status_code == 200, study.text[:500]
            curves = httpx.get(f"{url}/api/studies/spirals/curves", timeout=30).json()
            assert curves and all(c["points"] for c in curves), curves
            params = httpx.get(f"{url}/api/studies/spirals/params", timeout=30).json()
            complete = sorted(t["number"] for t in trials if t["state"] == "complete")
            assert [t["number"] for t in params["trials"]] == complete, params
            assert PASSWORD not in Path(env["CAUCE_HOME"], "ui.json").read_text()
        finally:
            stop(portal, grace=30)

        # errors name the database, not its password
        missing = cauce(["show", "no-such-job"], env)
        assert missing.returncode != 0
        assert "'no-such-job' in postgresql+psycopg://cauce:***@127.0.0.1" in missing.stderr
        bad = {**env, "CAUCE_HISTORY": postgres.url("no_such_database", PASSWORD)}
        refused = cauce(["jobs"], bad)
        assert refused.returncode != 0 and "no_such_database" in refused.stderr
        for done in (empty, tuned, listed, shown, missing, refused):
            assert PASSWORD not in done.stdout + done.stderr


def test_two_tuners_of_one_study_share_it_through_postgres(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """As two hosts of a team would (each its own cauce home, one database): both run trials
    of one study at once, every trial is done once, and the study ends at its size or a trial
    or two over (docs/tuning.md)."""
    with postgres.database() as url:
        job = ROOT / "examples" / "tune" / "job.yaml"
        tuners = []
        for host in ("a", "b"):
            env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
            env |= {
                "CAUCE_HOME": str(tmp_path / host / "home"),
                "CAUCE_LEASE_DIR": str(tmp_path / host / "leases"),
                "CAUCE_HISTORY": url,
                "PYTHONUNBUFFERED": "1",
            }
            tuners.append(
                # 10 trials of 1 to 2.5 s: enough for the later tuner to start on a busy machine
                (env, cauce_popen(["tune", str(job), "--trials", "10", "--parallel", "1"], env))
            )
        outputs = []
        for _, tuner in tuners:
            out, err = tuner.communicate(timeout=300)
            assert tuner.returncode == 0, err
            outputs.append(out)
        trials = json.loads(cauce(["trials", "spirals", "--format", "json"], tuners[0][0]).stdout)
        assert 10 <= len(trials) <= 12, trials
        assert {t["state"] for t in trials} <= {"complete", "pruned"}, trials
        assert len({t["number"] for t in trials}) == len(trials)
        # both tuners ran some of them: each prints the trials it started
        started = [set(re.findall(r"trial (\d+) running", out)) for out in outputs]
        assert all(started) and not started[0] & started[1], outputs
        jobs = cauce(["jobs", "--limit", "20"], tuners[1][0]).stdout
        assert all(t["job_id"] in jobs for t in trials), jobs


def test_a_study_storage_that_cannot_be_opened_is_named_without_its_password() -> None:
    pytest.importorskip("psycopg")
    from cauce.errors import CauceError
    from cauce.tune._optuna import open_storage

    with pytest.raises(CauceError) as raised:
        open_storage(f"postgresql+psycopg://cauce:{PASSWORD}@127.0.0.1:{free_port()}/nothing")
    assert "the study storage at 'postgresql+psycopg://cauce:***@127.0.0.1:" in str(raised.value)
    assert PASSWORD not in str(raised.value)


def test_connections_to_postgres_have_time_limits_a_url_can_change(postgres_url: str) -> None:
    """A database that stops answering fails a call in about 30 s, not after TCP's quarter of
    an hour (tests/test_multihost_tune.py cuts a host off); the URL's own values win."""
    from cauce.history import HistoryStore

    for url, timeout in (
        (postgres_url, "30000"),
        (f"{postgres_url}?tcp_user_timeout=5000", "5000"),
    ):
        store = HistoryStore(url)
        try:
            with store.engine.connect() as conn:
                dsn = conn.connection.dbapi_connection.info.dsn  # type: ignore[union-attr]
        finally:
            store.close()
        assert f"tcp_user_timeout={timeout}" in dsn and "connect_timeout=10" in dsn, dsn
        assert "keepalives=1" in dsn, dsn


def test_a_database_that_does_not_answer_is_named_in_one_line() -> None:
    pytest.importorskip("psycopg")
    from cauce.errors import HistoryError
    from cauce.history import HistoryStore, unanswered

    url = f"postgresql+psycopg://cauce:{PASSWORD}@127.0.0.1:{free_port()}/nothing"
    with pytest.raises(HistoryError) as raised:
        HistoryStore(url)
    words = unanswered(raised.value)
    assert words is not None and "connection failed" in words and "\n" not in words, words
    message = str(raised.value)
    assert message.endswith(words) and "[SQL" not in message and PASSWORD not in message
    assert unanswered(ValueError("not a database")) is None


FAR = "cauce-far-host"


def _far_driver(
    postgres_url: str, tmp_path: Path, spec: str
) -> tuple[subprocess.Popen[str], Callable[[], dict[str, Any]]]:
    """``cauce run`` of ``spec`` on "another host" (a host name of its own: a UTS namespace,
    one history in PostgreSQL, ``CAUCE_LOST_AFTER`` 3 s), and what ``cauce jobs`` shows of it
    from this host once it runs."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("another host name needs root and unshare (util-linux)")
    job = tmp_path / "job.yaml"
    job.write_text(spec, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env |= {"CAUCE_HISTORY": postgres_url, "CAUCE_LOST_AFTER": "3", "PYTHONUNBUFFERED": "1"}
    here = {**env, "CAUCE_HOME": str(tmp_path / "here")}
    named = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', FAR]
    driver = subprocess.Popen(
        [*named, sys.executable, "-m", "cauce", "run", "--quiet", str(job)],
        env={**env, "CAUCE_HOME": str(tmp_path / "there")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def listed() -> dict[str, Any]:
        done = cauce(["jobs", "--format", "json"], here)
        assert done.returncode == 0, done.stderr
        rows = json.loads(done.stdout)
        return rows[0] if rows else {}

    deadline = time.monotonic() + 60
    while listed().get("status") not in ("running", "restarting"):
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            raise AssertionError(f"{listed()}: {driver.communicate()}")
        time.sleep(0.3)
    assert listed()["host"] == FAR
    return driver, listed


def _stop(driver: subprocess.Popen[str]) -> None:
    if driver.poll() is None:
        driver.kill()
        driver.communicate()


def test_a_job_whose_driver_on_another_host_died_is_lost_once_its_heartbeat_stops(
    postgres_url: str, tmp_path: Path
) -> None:
    """A driver on another host cannot be seen from here: while it beats its job is running,
    after ``kill -9`` it is lost, saying why, once ``CAUCE_LOST_AFTER`` has passed."""
    spec = (
        "name: far\n"
        'command: python -c "import time; time.sleep(300)"\n'
        "roles: {worker: {instances: 1, resources: {cpus: 0.5}}}\n"
        "grace_period: 2\n"
    )
    driver, listed = _far_driver(postgres_url, tmp_path, spec)
    try:
        time.sleep(4.5)  # longer than CAUCE_LOST_AFTER: the heartbeats keep it running
        assert listed()["status"] == "running", listed()
        driver.kill()
        driver.communicate(timeout=30)
        time.sleep(3.5)
        row = listed()
        assert row["status"] == "lost", row
        cause = f"the driver (pid {driver.pid} on {FAR}) sent no heartbeat for 3 s"
        assert cause in row["root_cause"], row
    finally:
        _stop(driver)


def test_a_job_in_a_restart_backoff_longer_than_lost_after_is_not_lost(
    postgres_url: str, tmp_path: Path
) -> None:
    """Between two attempts no task reports, but the driver still beats: a 10 s backoff, seen
    from another host with ``CAUCE_LOST_AFTER`` 3 s, is ``restarting``, not ``lost``."""
    spec = (
        "name: far\n"
        'command: python -c "import time; time.sleep(1); raise SystemExit(3)"\n'
        "roles: {worker: {instances: 1, resources: {cpus: 0.5}}}\n"
        "restart: {max_restarts: 1, backoff: 10}\n"
        "grace_period: 2\n"
    )
    driver, listed = _far_driver(postgres_url, tmp_path, spec)
    try:
        deadline = time.monotonic() + 30
        while listed()["status"] != "restarting":
            assert time.monotonic() < deadline, listed()
            time.sleep(0.2)
        time.sleep(4.5)  # in the backoff, past CAUCE_LOST_AFTER
        assert listed()["status"] == "restarting", listed()
        driver.communicate(timeout=60)
        assert listed()["status"] == "failed", listed()
    finally:
        _stop(driver)


def test_a_job_goes_on_through_a_restart_of_its_history_server(tmp_path: Path) -> None:
    """PostgreSQL stopped (a fast shutdown, as an operator restarts it) for 5 s in the middle
    of a job: the driver's writes are tried again until it is back, and the job ends succeeded
    with every epoch recorded (it failed at its next write before)."""
    epochs = 100
    shutil.copy(ROOT / "examples" / "tune" / "train.py", tmp_path / "train.py")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: restarted\n"
        f"command: python train.py --epochs {epochs} --samples 1000 --epoch-delay 0.1\n"
        "roles: {worker: {resources: {cpus: 0.5}}}\n",
        encoding="utf-8",
    )
    with running() as server, server.database() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
        env |= {"CAUCE_HOME": str(tmp_path / "home"), "CAUCE_HISTORY": url}
        run = subprocess.Popen(
            [sys.executable, "-m", "cauce", "run", str(job)],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            time.sleep(4)
            server.restart(5.0)
            out, err = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
        assert run.returncode == 0, out + err
        assert err.count("does not answer") == 1 and "answers again" in err, err
        assert "WARNING psycopg" not in err, err  # its own words for the dropped connections
        name = url.rsplit("/", 1)[1]
        [(job_id, status)] = server.execute(name, "SELECT id, status FROM jobs")
        [(recorded,)] = server.execute(
            name, f"SELECT count(*) FROM metrics WHERE job_id = '{job_id}' AND name = 'val_loss'"
        )
    assert (status, recorded) == ("succeeded", epochs)


@contextlib.contextmanager
def _job_while_down(
    server: PostgresServer, url: str, job: Path, down: float
) -> Iterator[tuple[subprocess.Popen[str], threading.Thread]]:
    """``cauce run JOB`` (in JOB's folder) with its history at ``url``, and a thread that
    stops ``server`` for ``down`` seconds once started; the run is killed if it still runs
    when the block ends, and the server is back."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
    env |= {"CAUCE_HOME": str(job.parent / "home"), "CAUCE_HISTORY": url}
    run = cauce_popen(["run", str(job)], env, cwd=job.parent)
    outage = threading.Thread(target=server.restart, args=(down,))
    try:
        yield run, outage
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
        if outage.is_alive():
            outage.join()


def test_ctrl_c_stops_a_job_whose_history_does_not_answer_at_once(tmp_path: Path) -> None:
    """While the driver tries its writes again (the server down), Ctrl-C still stops the job in
    seconds, not after the minute it would go on trying, and leaves no task running."""
    import psutil

    shutil.copy(ROOT / "examples" / "tune" / "train.py", tmp_path / "train.py")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: impatient\n"
        "command: python train.py --epochs 1000 --samples 1000 --epoch-delay 0.1\n"
        "roles: {worker: {resources: {cpus: 0.5}}}\n"
        "grace_period: 3\n",
        encoding="utf-8",
    )
    with (
        running() as server,
        server.database() as url,
        _job_while_down(server, url, job, 25.0) as (run, down),
    ):
        time.sleep(4)
        tasks = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
        down.start()
        time.sleep(5)  # the driver meets the server gone at its next write, within 1 s
        began = time.monotonic()
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
        took = time.monotonic() - began
    assert run.returncode != 0 and "does not answer" in err, out + err
    assert took < 15, (took, err)
    assert tasks and gone(tasks), "a task outlived its job"


def test_a_study_goes_on_through_a_restart_of_its_database(tmp_path: Path) -> None:
    """PostgreSQL down for 20 s while a study runs (its tuner's heartbeat, asks and verdicts
    meet the outage): every call is made again until the server is back, and the study ends
    complete with its 8 trials, none failed (the study failed at its first call before)."""
    import threading

    with running() as server, server.database() as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAUCE_")}
        env |= {"CAUCE_HOME": str(tmp_path / "home"), "CAUCE_HISTORY": url}
        env |= {"PYTHONUNBUFFERED": "1"}
        job = ROOT / "examples" / "tune" / "job.yaml"
        tuner = cauce_popen(["tune", str(job), "--trials", "8", "--parallel", "2"], env)
        lines: list[str] = []
        errors: list[str] = []
        started = threading.Event()

        def read() -> None:
            assert tuner.stdout is not None
            for line in tuner.stdout:
                lines.append(line)
                if "trial 3 running" in line:
                    started.set()

        readers = [
            threading.Thread(target=read),
            threading.Thread(target=lambda: errors.extend(tuner.stderr or ())),
        ]
        for reader in readers:
            reader.start()
        with tuner:  # its pipes closed, and it waited for, at the end
            try:
                assert started.wait(120), "".join(lines)
                server.restart(20.0)
                tuner.wait(timeout=180)
            finally:
                if tuner.poll() is None:
                    tuner.kill()
                for reader in readers:
                    reader.join()
        err = "".join(errors)
        out = "".join(lines)
        assert tuner.returncode == 0, out + err
        assert err.count("does not answer") == 1 and "answers again" in err, err
        states = server.execute(url.rsplit("/", 1)[1], "SELECT state FROM trials")
    assert len(states) == 8 and {s for (s,) in states} <= {"COMPLETE", "PRUNED"}, states


def test_a_silence_seen_while_the_database_did_not_answer_does_not_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tuner that could not reach the study's database does not take another tuner's trial
    over for the silence it saw meanwhile (both were cut off): the silence counts again from
    when the server answers, and a trial still silent CAUCE_LOST_AFTER later is taken over."""
    import threading

    import optuna

    from cauce.history import HistoryStore
    from cauce.tune._optuna import patient_storage
    from cauce.tune._owner import TunerId
    from cauce.tune._recovery import Recovery

    monkeypatch.setenv("CAUCE_LOST_AFTER", "4")  # also how long a call is asked again
    with running() as server, server.database() as url:
        store = HistoryStore(url)
        storage = optuna.storages.RDBStorage(url)
        down = threading.Thread(target=server.restart, args=(3.0,))
        try:
            patient = patient_storage(storage, store)
            study = optuna.create_study(study_name="cut", storage=patient)
            asked = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
            recovery = Recovery(study, patient, store, TunerId.mine())
            assert recovery.recover(mine=set()) == []  # nameless: watched from now
            time.sleep(2.0)
            down.start()
            time.sleep(0.5)
            assert recovery.recover(mine=set()) == []  # asked again until the server is back
            assert store.answering_since() > 0
            # silent for 5 s, more than CAUCE_LOST_AFTER, but seen for 2 s only: not yet
            assert recovery.recover(mine=set()) == []
            time.sleep(4.5)
            assert recovery.recover(mine=set()) == [asked.number]
        finally:
            if down.is_alive():
                down.join()
            storage.engine.dispose()
            store.close()


_FAILS_ON_CUE = """
import os, pathlib, sys, time
import cauce
cue = pathlib.Path(sys.argv[1])
for step in range(100_000):
    cauce.report(step, loss=1.0 / (step + 1))
    if os.environ["CAUCE_TASK_ID"] == "worker-1" and cue.exists():
        print("worker-1 fails on cue", flush=True)
        sys.exit(3)
    time.sleep(0.1)
"""


def test_a_task_that_fails_while_the_history_does_not_answer_stops_its_gang_at_once(
    tmp_path: Path,
) -> None:
    """With the server down, one task of a gang fails: the driver stops the other at once, not
    once the server answers again (its loop used to wait on its retried writes of the tasks'
    reports, up to a minute), and the job ends failed, recorded, when the server is back."""
    import psutil

    (tmp_path / "fails.py").write_text(_FAILS_ON_CUE, encoding="utf-8")
    cue = tmp_path / "cue"
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: cut-off\n"
        f"command: python fails.py {cue}\n"
        "roles: {worker: {instances: 2, resources: {cpus: 0.5}}}\n"
        "grace_period: 3\n",
        encoding="utf-8",
    )
    with (
        running() as server,
        server.database() as url,
        _job_while_down(server, url, job, 30.0) as (run, down),
    ):
        time.sleep(5)
        tasks = [
            p.pid
            for p in psutil.Process(run.pid).children(recursive=True)
            if "fails.py" in " ".join(p.cmdline())
        ]
        down.start()
        time.sleep(4)  # the driver's writes of the reports now wait for the server
        cue.touch()
        began = time.monotonic()
        stopped = gone(tasks, within=12)
        took = time.monotonic() - began
        out, err = run.communicate(timeout=120)
        name = url.rsplit("/", 1)[1]
        [(status, cause)] = server.execute(name, "SELECT status, root_cause FROM jobs")
        tasks_rows = server.execute(name, "SELECT task_id, status, exit_code FROM tasks")
    assert len(tasks) == 2, tasks
    assert stopped, f"the gang ran on for {took:.1f} s while the server was down:\n{err}"
    assert run.returncode == 1, out + err
    assert "does not answer" in err and "answers again" in err, err
    assert status == "failed" and "worker-1" in cause and "3" in cause, cause
    assert sorted((t, s) for t, s, _ in tasks_rows) == [
        ("worker-0", "stopped"),
        ("worker-1", "failed"),
    ], tasks_rows
