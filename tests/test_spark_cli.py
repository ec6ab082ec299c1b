"""`cauce run --cluster spark://... --conf ...` through the real CLI, each run its own Spark
application on the standalone cluster of ``spark_fixtures``: output, logs and metrics come back
to the driver; Ctrl-C and kill -9 of the driver leave no task process on the executors."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import cauce, cauce_popen, gone, py, running, write_job
from pipeline_fixtures import statuses, write_small
from spark_fixtures import StandaloneSpark

pytestmark = pytest.mark.slow


def spark_env(env: dict[str, str], cluster: StandaloneSpark, *, but: str = "") -> dict[str, str]:
    """``env`` with the cluster's settings in $CAUCE_SPARK_CONF (all but ``but``)."""
    pairs = [f"{k}={v}" for k, v in cluster.conf.items() if k != but]
    return {
        **env,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "CAUCE_SPARK_CONF": " ".join(shlex.quote(p) for p in pairs),
    }


def job_id(stderr: str) -> str:
    return stderr.split("cauce: job ", 1)[1].split(":", 1)[0]


def test_bad_conf_is_refused_before_spark_starts(tmp_path: Path, cauce_env: dict[str, str]) -> None:
    path = write_job(tmp_path, f"command: {py('exit_with.py', 0)}\nname: conf\n")
    done = cauce(["run", str(path), "--conf", "executor.memory=2g"], cauce_env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --conf key 'executor.memory' is not a Spark setting: keys start with 'spark.', "
        "like spark.executor.memory"
    )
    done = cauce(["run", str(path), "--conf", "spark.executor.memory"], cauce_env)
    assert done.returncode == 2 and "--conf must be KEY=VALUE" in done.stderr


def test_cli_run_on_spark(
    tmp_path: Path, cauce_env: dict[str, str], spark_cluster: StandaloneSpark
) -> None:
    out = tmp_path / "out"
    path = write_job(
        tmp_path,
        f"""
        name: cli-spark
        command: {py("trainer.py", "--epochs", 1, "--out", out)}
        roles:
          worker: {{instances: 2}}
        spark: {{spark.executor.memory: 256m}}
        """,
    )
    env = spark_env(cauce_env, spark_cluster, but="spark.driver.host")
    args = ["run", str(path), "--cluster", spark_cluster.master]
    done = cauce([*args, "--conf", "spark.driver.host=127.0.0.1"], env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[worker-0] worker-0: done, weight" in done.stdout
    assert "[worker-1] worker-1: done, weight" in done.stdout
    job = job_id(done.stderr)
    shown = cauce(["show", job], env).stdout
    assert f"spark ({spark_cluster.master})" in shown
    logs = cauce(["logs", job, "--task", "worker-1"], env).stdout
    assert "cauce: worker-1 runs on 127.0.0.1 port" in logs
    assert "worker-1: done, weight" in logs
    metrics = cauce(["metrics", job, "--format", "json"], env).stdout
    assert len(json.loads(metrics)) == 2 * 5
    assert spark_cluster.tasks_left() == []


def _wait_for_tasks(folder: Path, pattern: str, count: int, driver: subprocess.Popen[str]) -> None:
    """Until ``count`` files ``pattern`` (one per started task) are in ``folder``."""
    deadline = time.monotonic() + 240
    while len(list(folder.glob(pattern))) < count:
        if driver.poll() is not None or time.monotonic() > deadline:
            driver.kill()
            out, err = driver.communicate()
            raise AssertionError(f"the tasks did not start:\n{out}\n{err}")
        time.sleep(0.2)


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_driver_interrupted_or_killed_leaves_nothing_on_the_executors(
    tmp_path: Path, cauce_env: dict[str, str], spark_cluster: StandaloneSpark, how: str
) -> None:
    pids = tmp_path / "pids"
    path = write_job(
        tmp_path,
        f"""
        name: stopme
        command: {py("sleeper.py", pids, 300)}
        roles:
          worker: {{instances: 2}}
        restart: {{max_restarts: 5}}
        grace_period: 3
        """,
    )
    env = spark_env(cauce_env, spark_cluster)
    driver = cauce_popen(["run", str(path), "--cluster", spark_cluster.master], env)
    try:
        _wait_for_tasks(pids, "*.pids", 2, driver)
        time.sleep(0.2)
        task_pids = [int(p) for f in pids.glob("*.pids") for p in f.read_text().split()]
        assert len(task_pids) == 4 and all(running(p) for p in task_pids)
        driver.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
        try:
            _, err = driver.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            driver.kill()
            raise
    finally:
        driver.kill()
        driver.communicate()
    if how == "sigint":
        assert driver.returncode == 130, err
        assert "interrupted (SIGINT)" in err and "restarting" not in err
        assert gone(task_pids, within=2)
    else:
        # The driver's JVM follows it, Spark then ends the application and kills the executors'
        # Python workers, and the reapers take the commands down with them.
        assert gone(task_pids, within=60), "tasks outlived a driver killed with SIGKILL"
    assert spark_cluster.tasks_left() == []


def test_gpu_tasks_of_a_killed_driver_end_with_their_spark_tasks(
    tmp_path: Path, cauce_env: dict[str, str], spark_cluster: StandaloneSpark
) -> None:
    """Once Spark has ended the application of a driver killed with SIGKILL, it counts the
    GPUs free: the commands that used them (ignoring SIGTERM, with a grace period of 300 s)
    must not run on beside the next tasks given those GPUs, but end at once."""
    out = tmp_path / "out"
    path = write_job(
        tmp_path,
        f"""
        name: gpus
        command: {py("gpu_holder.py", out, "--stubborn")}
        roles:
          worker: {{instances: 2, resources: {{gpus: 1}}}}
        grace_period: 300
        """,
    )
    env = spark_env(cauce_env, spark_cluster)
    driver = cauce_popen(["run", str(path), "--cluster", spark_cluster.master], env)
    task_pids: list[int] = []
    try:
        _wait_for_tasks(out, "*.start", 2, driver)
        records = [json.loads(f.read_text()) for f in out.glob("*.start")]
        task_pids = [int(r[key]) for r in records for key in ("pid", "child")]
        assert sorted(r["gpus"] for r in records) != ["", ""]
        driver.send_signal(signal.SIGKILL)
        driver.communicate(timeout=60)
        # far less than the grace period: the reapers did not wait for it
        assert gone(task_pids, within=120), "GPU tasks outlived the Spark tasks that ran them"
    finally:
        driver.kill()
        driver.communicate()
        for pid in task_pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
    assert spark_cluster.tasks_left() == []


def test_a_pipeline_runs_its_steps_on_the_cluster(
    tmp_path: Path, cauce_env: dict[str, str], spark_cluster: StandaloneSpark
) -> None:
    """--cluster reaches every step that can use it: preparation on Spark (the standalone
    master), and each job step's gang as a barrier stage."""
    pipeline = write_small(tmp_path / "p")
    env = spark_env(cauce_env, spark_cluster)
    done = cauce(["run", str(pipeline), "--cluster", spark_cluster.master], env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert statuses(done.stderr) == {"prepare": "ran", "train": "ran", "after": "ran"}
    assert f"[prepare] preparing {tmp_path / 'p' / 'build_mod.py'}:build into" in done.stderr
    assert "(spark)" in done.stderr
    assert f"[train] running {tmp_path / 'p' / 'job.yaml'} on {spark_cluster.master}" in done.stderr
    for step in ("train", "after"):
        state = tmp_path / "home" / "pipelines" / "small" / "state" / f"{step}.json"
        job = json.loads(state.read_text())["result"]["job_id"]
        assert f"spark ({spark_cluster.master})" in cauce(["show", job], env).stdout
    state = tmp_path / "home" / "pipelines" / "small" / "state" / "after.json"
    assert json.loads(state.read_text())["result"]["json"]["result"]["rows"] == 10
    assert spark_cluster.tasks_left() == []
