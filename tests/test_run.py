"""`cauce run` on the local cluster with real processes: success, failure, restarts, teardown."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from helpers import cauce, cauce_popen, gone, job_ids, py, write_job


def wait_for_files(
    folder: Path,
    pattern: str,
    count: int,
    within: float = 60.0,
    driver: subprocess.Popen[str] | None = None,
) -> list[Path]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if driver is not None and driver.poll() is not None:
            out, err = driver.communicate()
            raise AssertionError(f"cauce exited {driver.returncode} early:\n{out}\n{err}")
        found = sorted(folder.glob(pattern))
        if len(found) >= count:
            time.sleep(0.2)  # let the writers finish
            return found
        time.sleep(0.1)
    found = list(folder.iterdir()) if folder.exists() else "no folder"
    more = ""
    if driver is not None:
        driver.kill()
        out, err = driver.communicate()
        more = f"; cauce printed:\n{out}\n{err}"
    raise AssertionError(f"expected {count} files {pattern} in {folder}, got {found}{more}")


def job_statuses(env: dict[str, str]) -> list[str]:
    db = Path(env["CAUCE_HOME"]) / "history.db"
    with sqlite3.connect(db, timeout=30) as conn:  # a driver may be creating the schema
        return [row[0] for row in conn.execute("select status from jobs")]


def test_success_echoes_prefixed_output_and_records_history(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    path = write_job(
        tmp_path,
        """
        name: hello
        command: python -c "import os; print('hello from', os.environ['CAUCE_TASK_ID'])"
        roles:
          worker: {instances: 2}
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 0, done.stderr
    assert "[worker-0] hello from worker-0" in done.stdout
    assert "[worker-1] hello from worker-1" in done.stdout
    assert "succeeded" in done.stderr
    [job_id] = job_ids(cauce_env)
    shown = cauce(["show", job_id], cauce_env)
    assert "status:    succeeded" in shown.stdout
    assert shown.stdout.count("succeeded") >= 3  # the job and both tasks
    listed = cauce(["jobs"], cauce_env)
    assert job_id in listed.stdout and "succeeded" in listed.stdout
    logs = cauce(["logs", job_id[:12], "--task", "worker-1"], cauce_env)
    assert "hello from worker-1" in logs.stdout
    assert "worker-0" not in logs.stdout.replace("=== cauce", "")


def test_failure_reports_root_cause_and_stops_the_gang(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    pids = tmp_path / "pids"
    path = write_job(
        tmp_path,
        f"""
        name: fails
        roles:
          worker:
            instances: 1
            command: {py("sleeper.py", pids, 300)}
          trainer:
            instances: 1
            command: {py("exit_with.py", 3, "--after", 1.5, "--when", pids / "worker-0.pids")}
        """,
    )
    started = time.monotonic()
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert time.monotonic() - started < 150  # the worker sleeps 300 s: it was stopped
    assert "trainer-0 failed first (exit 3 after" in done.stderr
    assert "trainer-0: something went wrong, exiting with 3" in done.stderr  # the log tail
    [pidfile] = wait_for_files(pids, "*.pids", 1, within=1)
    assert gone([int(p) for p in pidfile.read_text().split()], within=5)
    [job_id] = job_ids(cauce_env)
    shown = cauce(["show", job_id], cauce_env).stdout
    assert "status:    failed" in shown
    assert "trainer-0 failed first" in shown


def test_one_task_succeeds_other_fails_is_a_failure(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    path = write_job(
        tmp_path,
        f"""
        name: half
        command: {py("exit_with.py", 4, "--after", 1.0, "--only-task", "worker-1")}
        roles:
          worker: {{instances: 2}}
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 1
    assert "worker-1 failed first (exit 4" in done.stderr


def test_restarts_are_counted_and_visible(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = write_job(
        tmp_path,
        f"""
        name: flaky
        command: {py("exit_with.py", 3)}
        roles:
          worker: {{instances: 2}}
        restart: {{max_restarts: 2, backoff: 0.2}}
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 1
    assert "restarting the gang in 0.2 s (restart 1 of 2)" in done.stderr
    assert "restarting the gang in 0.4 s (restart 2 of 2)" in done.stderr
    assert "2 restart(s) were tried" in done.stderr
    assert "attempt 3" in done.stderr
    [job_id] = job_ids(cauce_env)
    shown = cauce(["show", job_id], cauce_env).stdout
    assert "attempts:  3 (restarts: 2)" in shown
    assert "restart 1 at" in shown and "restart 2 at" in shown
    logs = cauce(["logs", job_id, "--task", "worker-0"], cauce_env).stdout
    # every attempt is marked in the log; a task may be stopped before it prints anything
    assert [f"=== cauce: attempt {n} of job" in logs for n in (1, 2, 3)] == [True] * 3
    # and each attempt's output is kept: the task that failed first had printed its line (which
    # of the two did varies with the host's load, so both logs are read)
    logs += cauce(["logs", job_id, "--task", "worker-1"], cauce_env).stdout
    assert [f"starting, attempt {n}\n" in logs for n in (0, 1, 2)] == [True] * 3, logs


def test_kill_9_of_the_driver_leaves_no_task_alive(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    pids = tmp_path / "pids"
    path = write_job(
        tmp_path,
        f"""
        name: orphans
        command: {py("sleeper.py", pids, 300)}
        roles:
          worker: {{instances: 2}}
        """,
    )
    driver = cauce_popen(["run", str(path)], cauce_env)
    try:
        files = wait_for_files(pids, "*.pids", 2, driver=driver)
        task_pids = [int(p) for f in files for p in f.read_text().split()]
        assert len(task_pids) == 4 and all(psutil.pid_exists(p) for p in task_pids)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        assert gone(task_pids), "tasks outlived a driver killed with SIGKILL"
    finally:
        driver.kill()
        driver.communicate()
    [job_id] = job_ids(cauce_env)
    listed = cauce(["jobs"], cauce_env).stdout
    assert "lost" in listed
    assert "died without finishing" in cauce(["show", job_id], cauce_env).stdout


@pytest.mark.parametrize("how", ["sigint", "cauce-kill"])
def test_interrupt_tears_the_gang_down(tmp_path: Path, cauce_env: dict[str, str], how: str) -> None:
    pids = tmp_path / "pids"
    path = write_job(
        tmp_path,
        f"""
        name: stopme
        command: {py("sleeper.py", pids, 300)}
        roles:
          worker: {{instances: 2}}
        restart: {{max_restarts: 5}}
        """,
    )
    driver = cauce_popen(["run", str(path)], cauce_env)
    try:
        files = wait_for_files(pids, "*.pids", 2, driver=driver)
        task_pids = [int(p) for f in files for p in f.read_text().split()]
        if how == "sigint":
            driver.send_signal(signal.SIGINT)
        else:
            [job_id] = job_ids(cauce_env)
            killed = cauce(["kill", job_id], cauce_env)
            assert killed.returncode == 0, killed.stderr
            assert "killed" in killed.stdout
        _, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 130, err
    assert "killed" in err and "interrupted (SIG" in err
    assert gone(task_pids)
    assert "restarting" not in err


def test_task_that_cannot_start_fails_with_127(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    # A program that does not exist is refused before the start (exit 2).
    path = write_job(tmp_path, "name: nostart\ncommand: [/nonexistent/trainer, --epochs, 1]\n")
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 2
    assert "runs '/nonexistent/trainer', which does not exist" in done.stderr
    # One that exists but cannot start (its interpreter is missing) fails with 127, and 127 is
    # not restarted.
    trainer = tmp_path / "trainer"
    trainer.write_text("#!/nonexistent/python\n", encoding="utf-8")
    trainer.chmod(0o755)
    path = write_job(
        tmp_path,
        f"name: nostart\ncommand: [{trainer}, --epochs, 1]\nrestart: {{max_restarts: 2}}\n",
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 1
    assert "worker-0 failed first (exit 127" in done.stderr
    assert f"cannot start '{trainer}'" in done.stderr
    assert "restarting" not in done.stderr


def test_timeout_stops_the_job(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = write_job(
        tmp_path,
        f"""
        name: slow
        command: {py("sleeper.py", tmp_path / "pids", 300)}
        timeout: 2
        restart: {{max_restarts: 3}}
        """,
    )
    started = time.monotonic()
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 1
    assert "timed out after 2 s" in done.stderr
    assert time.monotonic() - started < 150  # the task sleeps 300 s: it was stopped


def test_dry_run_prints_the_plan_and_starts_nothing(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    marker = tmp_path / "ran"
    path = write_job(
        tmp_path,
        f"""
        name: plan
        framework: pytorch
        command: touch {marker}
        roles:
          worker:
            instances: 2
            resources: {{gpus: 1}}
        """,
    )
    done = cauce(["run", "--dry-run", str(path)], {**cauce_env, "CAUCE_GPUS": "0,1,2,3"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "worker-0: host 127.0.0.1 port " in out and "gpus 0 " in out
    assert "worker-1: host 127.0.0.1 port " in out and "gpus 1 " in out
    assert "CUDA_VISIBLE_DEVICES=1" in out and "WORLD_SIZE=2" in out
    assert "MASTER_PORT=" in out and "OMP_NUM_THREADS=1" in out
    assert not marker.exists()
    assert "no jobs yet" in cauce(["jobs"], cauce_env).stdout


def test_gang_needing_more_gpus_than_declared_fails_at_once(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    path = write_job(
        tmp_path,
        """
        name: greedy
        command: 'true'
        roles:
          worker:
            instances: 3
            resources: {gpus: 2}
        """,
    )
    started = time.monotonic()
    done = cauce(["run", str(path)], {**cauce_env, "CAUCE_GPUS": "0,1,2,3"})
    assert done.returncode == 2
    assert time.monotonic() - started < 90  # refused, not waiting for GPUs (it would forever)
    assert "needs 6 GPUs, this host has 4 (CAUCE_GPUS)" in done.stderr
    assert done.stderr.count("\n") == 1


def _gpus_of(folder: Path, job_id: str) -> list[str]:
    envs = [json.loads(p.read_text()) for p in sorted(folder.glob(f"{job_id}.*.json"))]
    return [e["CUDA_VISIBLE_DEVICES"] for e in envs]


@pytest.mark.slow
def test_gpu_placement_concurrent_jobs_and_waiting(
    tmp_path: Path, cauce_env: dict[str, str]
) -> None:
    """4 declared GPUs, jobs of 2 workers x 1 GPU: two run at once on disjoint GPUs, a third
    waits and runs when one finishes."""
    env = {**cauce_env, "CAUCE_GPUS": "0,1,2,3"}
    out, gate = tmp_path / "envs", tmp_path / "gate"
    # The tasks hold their GPUs until the gate opens: a fixed few seconds could pass before
    # the third driver, still importing on a busy host, ever looked for GPUs.
    text = f"""
        name: gpu
        command: {py("dump_env.py", out, 120, gate)}
        roles:
          worker:
            instances: 2
            resources: {{gpus: 1, cpus: 0.5}}
        """
    path = write_job(tmp_path, text)
    first = [cauce_popen(["run", str(path)], env) for _ in range(2)]
    try:
        wait_for_files(out, "*.json", 4)
        third = cauce_popen(["run", str(path)], env)
        deadline = time.monotonic() + 120
        while "waiting" not in job_statuses(env) and time.monotonic() < deadline:
            time.sleep(0.1)
        gate.touch()
        results = [p.communicate(timeout=120) for p in [*first, third]]
    finally:
        for p in first:
            p.kill()
    assert [p.returncode for p in [*first]] == [0, 0]
    assert third.returncode == 0, results[2]
    assert "waiting: needs 2 GPUs, 0 free" in results[2][1]
    ids = job_ids(cauce_env)
    assert len(ids) == 3
    gpus = {job: _gpus_of(out, job) for job in ids}
    a, b = (set(gpus[job]) for job in ids[:2])
    assert len(a) == 2 and len(b) == 2 and not a & b, gpus
    assert a | b == {"0", "1", "2", "3"}
    assert len(set(gpus[ids[2]])) == 2
    # the third started only after one of the first two had ended
    db = Path(env["CAUCE_HOME"]) / "history.db"
    with sqlite3.connect(db, timeout=30) as conn:
        times = dict(conn.execute("select id, started_at from jobs").fetchall())
        ended = dict(conn.execute("select id, ended_at from jobs").fetchall())
    assert times[ids[2]] >= min(ended[ids[0]], ended[ids[1]]) - 0.5


def test_env_reaches_tasks(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    out = tmp_path / "envs"
    path = write_job(
        tmp_path,
        f"""
        name: envs
        framework: pytorch
        command: {py("dump_env.py", out)}
        env: {{SHARED: job, OVERRIDE: job}}
        roles:
          worker:
            instances: 2
            resources: {{cpus: 1}}
            env: {{OVERRIDE: role}}
        """,
    )
    done = cauce(["run", str(path)], cauce_env)
    assert done.returncode == 0, done.stderr
    envs = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert [e["RANK"] for e in envs] == ["0", "1"]
    assert {e["MASTER_PORT"] for e in envs} == {envs[0]["MASTER_PORT"]}
    assert all(e["SHARED"] == "job" and e["OVERRIDE"] == "role" for e in envs)
    assert all(e["OMP_NUM_THREADS"] == "1" for e in envs)
    assert all(e["PATH"].split(os.pathsep)[0] == os.path.dirname(os.sys.executable) for e in envs)


def test_logs_follow_streams_until_the_job_ends(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = write_job(
        tmp_path,
        """
        name: chatty
        command: >-
          python -c "import time;
          [print('line', i, flush=True) or time.sleep(0.3) for i in range(8)]"
        roles:
          worker: {instances: 2}
        """,
    )
    driver = cauce_popen(["run", str(path)], cauce_env)
    try:
        deadline = time.monotonic() + 60
        ids: list[str] = []
        while not ids and time.monotonic() < deadline:
            time.sleep(0.2)
            ids = (
                job_ids(cauce_env)
                if (Path(cauce_env["CAUCE_HOME"]) / "history.db").exists()
                else []
            )
        follow = cauce(["logs", ids[0], "--follow"], cauce_env, timeout=120)
        driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 0
    assert follow.returncode == 0
    for task in ("worker-0", "worker-1"):
        assert f"[{task}] line 7" in follow.stdout
    assert follow.stdout.count("] line ") == 16
