"""The liveness of the links between a gang's tasks and the driver on Spark, without Spark: the
driver's end (``TaskLinks``) and the executor's end (``_Command``) over real sockets, with the
other end played by the test. The same on a real cluster: ``test_multihost_faults``. Last, on
the standalone cluster: a gang waiting in Spark's barrier slot check is cancelled."""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cauce.cluster._reaper import group_alive
from cauce.cluster.api import TaskExit, TaskLaunch
from cauce.cluster.spark._cluster import SparkCluster, barrier_check_settings
from cauce.cluster.spark._gang import cancel_group
from cauce.cluster.spark._links import LOST, TaskLinks
from cauce.cluster.spark._task import _Command
from cauce.cluster.spark._wire import PING, Channel, connect, keep_alive, ping_interval
from cauce.errors import SpecError
from helpers import BIN, running
from spark_fixtures import HeldApp, StandaloneSpark, held_app

TIMEOUT = 1.0  # the link timeout of these tests


def links(tmp_path: Path, exits: list[TaskExit], timeout: float = TIMEOUT) -> TaskLinks:
    launch = TaskLaunch("worker-0", ("true",), {}, str(tmp_path), str(tmp_path / "worker-0.log"))
    return TaskLinks(
        [launch], "127.0.0.1", lambda t, line: None, exits.append, link_timeout=timeout
    )


def hello(server: TaskLinks) -> Channel:
    """Connect as task worker-0, and say its command started on host 10.9.9.9."""
    channel = connect("127.0.0.1", server.port, 5.0)
    channel.send({"hello": server.token, "task": "worker-0"})
    assert channel.receive() == {"ok": True}
    channel.send({"started": 4242, "host": "10.9.9.9", "port": 1234, "gpus": []})
    return channel


def watch(server: TaskLinks, exits: list[TaskExit], seconds: float) -> None:
    """What the gang's watcher does: check the links every tick, for ``seconds`` or until
    the task's exit is reported."""
    deadline = time.monotonic() + seconds
    while not exits and time.monotonic() < deadline:
        server.check_links()
        time.sleep(0.05)


def test_a_silent_task_is_lost_with_its_host_and_runtime(tmp_path: Path) -> None:
    exits: list[TaskExit] = []
    server = links(tmp_path, exits)
    channel = hello(server)
    try:
        watch(server, exits, 10 * TIMEOUT)
        assert [(e.task_id, e.returncode) for e in exits] == [("worker-0", LOST)]
        assert exits[0].runtime >= TIMEOUT  # its real runtime, not 0
        log = (tmp_path / "worker-0.log").read_text()
        # the silence as measured: 1 s, or more when a busy host was late to look
        assert re.search(
            r"cauce: worker-0 on host 10\.9\.9\.9 lost: no word from it for \d+ s \(link timeout "
            r"1 s\); tasks on that host: worker-0\n\Z",
            log,
        ), log
        # The driver pinged it meanwhile, then closed the link.
        received = []
        while (message := channel.receive()) is not None:
            received.append(message)
        assert received and all(m == PING for m in received), received
    finally:
        channel.close()
        server.close()


def test_a_task_that_pings_is_not_lost(tmp_path: Path) -> None:
    # 3 s: with 1 s, a stall of this process's threads of about 0.75 s (a loaded host) between
    # a ping and its receipt would lose the task
    timeout = 3.0
    exits: list[TaskExit] = []
    server = links(tmp_path, exits, timeout)
    channel = hello(server)
    try:
        deadline = time.monotonic() + 2 * timeout  # silent, it would be lost within this
        while time.monotonic() < deadline:
            channel.send(PING)
            watch(server, exits, ping_interval(timeout))
        assert exits == []
        channel.send({"exit": 0, "runtime": 3.0})
        watch(server, exits, 5.0)
        assert exits == [TaskExit("worker-0", 0, 3.0)]
    finally:
        channel.close()
        server.close()


def test_a_task_whose_link_closes_is_lost_with_its_host(tmp_path: Path) -> None:
    exits: list[TaskExit] = []
    server = links(tmp_path, exits)
    try:
        hello(server).close()  # its Python worker died: no exit, a closed link
        deadline = time.monotonic() + 5.0
        while not exits and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(e.task_id, e.returncode) for e in exits] == [("worker-0", LOST)]
        log = (tmp_path / "worker-0.log").read_text()
        assert "cauce: worker-0 on host 10.9.9.9 lost: its link closed without an exit" in log
    finally:
        server.close()


def _bundle(tmp_path: Path, pids: Path) -> tuple[dict[str, object], dict[str, object]]:
    bundle: dict[str, object] = {
        "grace": 1.0,
        "link_timeout": TIMEOUT,
        "strip": [],
        "job_id": "links",
        "job_name": "links",
        "framework": "none",
        "attempt": 0,
        "max_restarts": 0,
        "rendezvous": None,
        "slots": [
            {"task_id": "worker-0", "role": "worker", "index": 0, "cpus": 1, "tracked": True}
        ],
    }
    task: dict[str, object] = {
        "task_id": "worker-0",
        "argv": [sys.executable, str(BIN / "sleeper.py"), str(pids), "600"],
        "cwd": str(tmp_path),
        "inherit": {},
        "overrides": {},
        "progress": False,
        "control": False,
    }
    return bundle, task


def test_a_task_stops_its_command_when_the_driver_goes_silent(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pids = tmp_path / "pids"
    bundle, task = _bundle(tmp_path, pids)
    mine, drivers = socket.socketpair()
    keep_alive(mine, TIMEOUT)
    channel, driver = Channel(mine), Channel(drivers)
    heard: list[dict[str, object]] = []
    listener = threading.Thread(
        target=lambda: heard.extend(iter(driver.receive, None)), daemon=True
    )
    listener.start()
    gathered = [{"host": "127.0.0.1", "port": 1, "gpus": []}]
    try:
        code, runtime = _Command(bundle, task, gathered, channel).run()  # type: ignore[arg-type]
    finally:
        channel.close()
        listener.join(timeout=10)
        driver.close()
    assert code == -15 and runtime >= TIMEOUT  # SIGTERM once the driver was silent
    err = capfd.readouterr().err  # the silence as measured: 1 s, or more on a busy host
    assert re.search(r"no word from the driver for \d+ s \(link timeout 1 s\): stopping", err), err
    [started] = [m for m in heard if "started" in m]
    assert not group_alive(int(str(started["started"])))  # the command and its child
    if (pids / "worker-0.pids").exists():
        children = [int(p) for p in (pids / "worker-0.pids").read_text().split()]
        assert not [p for p in children if running(p)], children


def test_link_timeout_setting_and_the_barrier_check_bound() -> None:
    assert SparkCluster("yarn", {"spark.cauce.linkTimeout": "45s"}).link_timeout == 45.0
    assert SparkCluster("yarn").link_timeout == 20.0
    with pytest.raises(SpecError, match=r"spark.cauce.linkTimeout must be > 0 seconds"):
        SparkCluster("yarn", {"spark.cauce.linkTimeout": "0"})
    interval = "spark.scheduler.barrier.maxConcurrentTasksCheck.interval"
    failures = "spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures"
    # Spark's default of 15 s x 40 (10 minutes) becomes about the placement timeout.
    assert barrier_check_settings(120.0) == {interval: "15s", failures: "8"}
    assert barrier_check_settings(4.0) == {interval: "1s", failures: "4"}
    assert barrier_check_settings(3600.0) == {interval: "15s", failures: "240"}


# --- on the standalone cluster of spark_fixtures (2 workers of 1 core) --------------------------


@pytest.fixture(scope="module")
def app(spark_cluster: StandaloneSpark) -> Iterator[HeldApp]:
    yield from held_app(spark_cluster)


@pytest.mark.slow
def test_a_gang_that_waits_in_sparks_barrier_check_is_cancelled(app: HeldApp) -> None:
    """Spark resubmits a barrier job that does not fit every ``interval`` (not an active job
    meanwhile, which a plain cancelJobGroup misses); cauce's cancel reaches it, and the
    application's check is bounded by the placement timeout (60 s in spark_fixtures)."""
    shared = app.held.session()
    assert shared.setting("spark.scheduler.barrier.maxConcurrentTasksCheck.interval") == "7s"
    assert shared.setting("spark.scheduler.barrier.maxConcurrentTasksCheck.maxFailures") == "9"
    sc, group, ended = shared.sc, "cauce-test-too-big", []

    def too_big() -> None:  # 4 barrier tasks on 2 slots: never fits
        sc.setJobGroup(group, "never fits")
        try:
            sc.parallelize(range(4), 4).barrier().mapPartitions(lambda rows: rows)._jrdd.count()
        except Exception as exc:  # py4j's error, with Spark's reason in its text
            ended.append(str(exc))

    job = threading.Thread(target=too_big, daemon=True)
    job.start()
    time.sleep(3.0)  # past the first check: waiting for its resubmission
    cancel_group(sc, group)
    job.join(timeout=120)
    assert not job.is_alive() and len(ended) == 1
    assert f"cancellation of all jobs in job group {group}" in ended[0] or (
        "part of cancelled job group" in ended[0]
    ), ended[0][:2000]
