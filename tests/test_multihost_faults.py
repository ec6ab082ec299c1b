"""Hosts that fail (issue 12, item 4), on a multi-host cluster of three worker hosts: a host cut
off the network in the middle of training, a worker JVM killed, and ``kill -9`` of the driver.

Each case runs ``cauce run`` on the driver host (``cauce-d``) against the cluster's master, with
``spark.cauce.linkTimeout`` at :data:`LINK_TIMEOUT`, and checks what docs/spark.md ("Hosts that
fail") promises: the root cause names the host and its tasks within the link timeout, nothing of
the gang is left running on any host, and a restart places the gang on the capacity that remains
(or waits for it) and resumes from the last checkpoint with the result of an uninterrupted run.

Checkpoints: every host here sees the same local disk, so :data:`CHECKPOINTS` is a local folder;
on a real cluster it is shared storage (``s3://bucket/checkpoints``), the same one line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from helpers import py, running, write_job
from multihost import WORKER_UI, MultiHost
from multihost_fixtures import start

pytestmark = pytest.mark.slow

LINK_TIMEOUT = 10.0  # spark.cauce.linkTimeout of these jobs
GRACE = 3.0  # their grace_period
#: A slack on every bound, for a loaded machine (never a speed claim: a bound that holds).
SLACK = 30.0
EPOCHS, STEPS = 30, 40
#: trainer.py's weight after EPOCHS * STEPS steps, interrupted or not.
EXPECTED = 1.0 - 0.9 ** (EPOCHS * STEPS)


def checkpoints(folder: Path) -> str:
    """Where the jobs keep their checkpoints: ``f"s3://shared/{folder.name}"`` once
    checkpoints work on s3:// (the hosts reach the cluster's S3 store, ``cluster.s3``)."""
    return str(folder / "checkpoints")


@pytest.fixture(scope="module")
def three_hosts() -> Iterator[MultiHost]:
    """A master, three worker hosts (``w1``..``w3``, 1 core and 2 declared GPUs each), a driver
    host and an S3 store. The other tests share a two-worker cluster; these need a spare host."""
    # its own names and subnet: the shared session cluster must live on
    tag = os.environ.get("CAUCE_MULTIHOST_TAG", "") + "f"
    cluster = start(3, tag=tag, index=int(os.environ.get("CAUCE_MULTIHOST_INDEX", "0")) + 3)
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def cluster(three_hosts: MultiHost) -> Iterator[MultiHost]:
    """The three-host cluster, every worker host reachable and its worker alive, before and
    after each test (a test that fails half-way leaves the next one a whole cluster)."""
    healthy(three_hosts)
    try:
        yield three_hosts
    finally:
        healthy(three_hosts)


def healthy(cluster: MultiHost, timeout: float = 180.0) -> None:
    for host in cluster.worker_hosts:
        cluster.restore(host)
    for host in cluster.worker_hosts:
        pid = cluster._pid(host, "worker")
        if pid is None or not running(pid):
            cluster.start_worker(host, timeout=timeout)
    deadline = time.monotonic() + timeout
    while sorted(cluster._alive_workers(cluster.state())) != sorted(cluster.worker_hosts):
        assert time.monotonic() < deadline, f"workers not all alive: {cluster.state()}"
        time.sleep(0.5)


class CauceRun:
    """``cauce run`` on the driver host, its output (stdout and stderr) read as it comes."""

    def __init__(self, cluster: MultiHost, folder: Path, job: str, conf: Sequence[str] = ()):
        path = write_job(folder, job)
        argv = [sys.executable, "-m", "cauce", "run", str(path), "--cluster", cluster.master]
        for setting in ("spark.executor.memory=512m", f"spark.cauce.linkTimeout={LINK_TIMEOUT:g}s",
                        *conf):  # fmt: skip
            argv += ["--conf", setting]
        env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        self.proc = cluster.popen_on("d", argv, env=env, cwd=folder, stderr=subprocess.STDOUT)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
        except (OSError, ValueError):  # closed by _close while the driver's JVM held it open
            pass

    def _close(self) -> None:
        if self.proc.stdout is None or self.proc.stdout.closed:
            return
        self._reader.join(timeout=30)
        self.proc.stdout.close()
        print(self.text)  # shown when the test fails, or with -rP

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in list(self.lines))

    def wait_for(self, pattern: str, timeout: float) -> tuple[float, re.Match[str]]:
        """When the first line matching ``pattern`` came, and its match."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            lines = list(self.lines)
            for when, line in lines[seen:]:
                if found := re.search(pattern, line):
                    return when, found
            seen = len(lines)
            if self.proc.poll() is not None and not self._reader.is_alive():
                pytest.fail(f"cauce ended before {pattern!r}:\n{self.text}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} within {timeout:g} s:\n{self.text}")
            time.sleep(0.2)

    def finish(self, timeout: float) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"cauce run did not end within {timeout:g} s:\n{self.text}")
        self._close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close()

    def run_dir(self) -> Path:
        _, found = self.wait_for(r"run folder (\S+)", 120)
        return Path(found.group(1))


#: A known failure under load (issue 12: the driver's read of its executors from Spark's REST
#: API times out and is fatal; another change makes it not fatal): the run is tried once more.
FLAKE = "cannot read the executors of Spark at"


def launch(cluster: MultiHost, folder: Path, job: str) -> tuple[CauceRun, Path]:
    """``cauce run`` of ``job``, once its first attempt has started; its run folder."""
    for _ in range(2):
        run = CauceRun(cluster, folder, job)
        run_dir = run.run_dir()
        deadline = time.monotonic() + 240
        while "cauce: attempt 1: started" not in run.text:
            if run.proc.poll() is not None or time.monotonic() > deadline:
                run.kill()
                if FLAKE in run.text:
                    print(f"tried again after: {run.text.splitlines()[-1]}")
                    break
                pytest.fail(f"the first attempt did not start:\n{run.text}")
            time.sleep(0.2)
        else:
            return run, run_dir
    pytest.fail(f"the first attempt did not start, twice:\n{run.text}")


def trainer_job(name: str, folder: Path, ranks: int) -> str:
    out = folder / "out"
    command = py("trainer.py", "--epochs", EPOCHS, "--steps", STEPS, "--out", out)
    return f"""
        name: {name}
        command: {command}
        roles:
          worker: {{instances: {ranks}}}
        restart: {{max_restarts: 2, backoff: 1}}
        grace_period: {GRACE:g}
        env: {{CAUCE_CHECKPOINT_DIR: {json.dumps(checkpoints(folder))}}}
        """


def trainer_log(folder: Path, task: str) -> list[dict[str, object]]:
    path = folder / "out" / f"{task}.log.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_epoch(run: CauceRun, folder: Path, epoch: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while (
        max([int(str(e.get("epoch", -1))) for e in trainer_log(folder, "worker-0")] or [-1]) < epoch
    ):
        if run.proc.poll() is not None or time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"training did not reach epoch {epoch}:\n{run.text}")
        time.sleep(0.2)


def task_hosts(run_dir: Path, attempt: int) -> dict[str, str]:
    """task -> the address of the host it ran on in ``attempt`` (1-based), from its log."""
    hosts = {}
    for log in sorted((run_dir / "logs").glob("*.log")):
        text = log.read_text(errors="replace")
        part = text.split(f"=== cauce: attempt {attempt} of job ", 1)
        if len(part) < 2:
            continue
        body = part[1].split("=== cauce: attempt ", 1)[0]
        if found := re.search(r"cauce: (\S+) runs on (\S+) port", body):
            hosts[found.group(1)] = found.group(2)
    return hosts


def wait_for_hosts(run: CauceRun, run_dir: Path, attempt: int, count: int) -> dict[str, str]:
    deadline = time.monotonic() + 240
    while len(hosts := task_hosts(run_dir, attempt)) < count:
        if run.proc.poll() is not None or time.monotonic() > deadline:
            run.kill()
            pytest.fail(f"attempt {attempt} did not start {count} tasks:\n{run.text}")
        time.sleep(0.2)
    return hosts


def host_of(cluster: MultiHost, address: str) -> str:
    return next(ns for ns, there in cluster.hosts.items() if there == address)


def check_resumed(folder: Path, tasks: Sequence[str]) -> None:
    """Every rank resumed from a checkpoint, and ended with an uninterrupted run's weight."""
    for task in tasks:
        log = trainer_log(folder, task)
        resumed = [e for e in log if "resumed_from" in e and e["attempt"] == 1]
        assert resumed and 0 < int(str(resumed[0]["resumed_from"])) < EPOCHS, log
        last = [e for e in log if "epoch" in e][-1]
        assert last["epoch"] == EPOCHS - 1 and last["attempt"] == 1, log
        assert abs(float(str(last["weight"])) - EXPECTED) < 1e-9, log


def wait_until_none(cluster: MultiHost, marker: str, bound: float) -> dict[str, list[str]]:
    """Poll every host for processes whose command line holds ``marker``, up to ``bound`` s;
    what is still there at the end."""
    deadline = time.monotonic() + bound
    while (left := cluster.processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def test_a_cut_host_is_named_and_the_gang_restarts_on_the_spare_host(
    cluster: MultiHost, tmp_path: Path
) -> None:
    run, run_dir = launch(cluster, tmp_path, trainer_job("cut", tmp_path, 2))
    victim = ""
    try:
        first = wait_for_hosts(run, run_dir, 1, 2)
        wait_for_epoch(run, tmp_path, 2)
        victim_task, address = sorted(first.items())[-1]
        victim = host_of(cluster, address)
        cut_at = time.monotonic()
        cluster.cut(victim)
        noticed, found = run.wait_for(r"(worker-\d) failed first \(exit 255 after ([\d.]+) s", 120)
        # The silent task is named, on its host, within the link timeout (and a tick or two).
        assert noticed - cut_at < LINK_TIMEOUT + SLACK, run.text
        assert found.group(1) == victim_task and float(found.group(2)) > 1.0, run.text
        run.wait_for(
            rf"cauce: {victim_task} on host {re.escape(address)} lost: no word from it for "
            rf"\d+ s \(link timeout {LINK_TIMEOUT:g} s\); tasks on that host: {victim_task}$",
            30,
        )
        # Nothing of the gang is left on the cut host: its task stops its command once the
        # driver is silent for the link timeout too.
        left = wait_until_none(cluster, str(tmp_path / "out"), LINK_TIMEOUT + GRACE + SLACK)
        assert left == {}, left
        second = wait_for_hosts(run, run_dir, 2, 2)
        assert address not in second.values(), (first, second)
        assert set(second.values()) | {address} == set(
            cluster.hosts[h] for h in cluster.worker_hosts
        ), second
        assert run.finish(timeout=300) == 0, run.text
    finally:
        run.kill()
        if victim:
            cluster.restore(victim)
    assert "restarting the gang in 1 s (restart 1 of 2)" in run.text
    check_resumed(tmp_path, ["worker-0", "worker-1"])
    deadline = time.monotonic() + 30
    while not cluster.reachable("d", victim, WORKER_UI):
        assert time.monotonic() < deadline, f"{victim} unreachable after restore"
        time.sleep(0.2)


def test_a_lost_worker_is_named_the_gang_waits_for_capacity_and_uses_the_host_again(
    cluster: MultiHost, tmp_path: Path
) -> None:
    run, run_dir = launch(cluster, tmp_path, trainer_job("lost", tmp_path, 3))
    try:
        first = wait_for_hosts(run, run_dir, 1, 3)
        wait_for_epoch(run, tmp_path, 2)
        victim_task, address = sorted(first.items())[-1]
        victim = host_of(cluster, address)
        cluster.kill_worker(victim)
        run.wait_for(rf"{victim_task} failed first \(exit 255 after [\d.]+ s", 120)
        run.wait_for(rf"cauce: {victim_task} on host {re.escape(address)} lost: ", 30)
        # Two hosts are left for three tasks: the restart waits, and says why.
        run.wait_for(r"cauce: waiting: needs 3 task slots, 2 free", 120)
        assert task_hosts(run_dir, 2) == {}
        cluster.start_worker(victim)  # the host comes back, and is used again
        second = wait_for_hosts(run, run_dir, 2, 3)
        assert sorted(second.values()) == sorted(first.values()), (first, second)
        assert run.finish(timeout=300) == 0, run.text
    finally:
        run.kill()
    check_resumed(tmp_path, ["worker-0", "worker-1", "worker-2"])


def test_kill_9_of_the_driver_leaves_nothing_running_on_any_host(
    cluster: MultiHost, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    job = f"""
        name: orphan
        command: {py("sleeper.py", pids, 600)}
        roles:
          worker: {{instances: 2}}
        grace_period: {GRACE:g}
        """
    run, run_dir = launch(cluster, tmp_path, job)
    try:
        hosts = wait_for_hosts(run, run_dir, 1, 2)
        deadline = time.monotonic() + 120
        while len(list(pids.glob("*.pids"))) < 2:
            assert time.monotonic() < deadline, run.text
            time.sleep(0.2)
        started = cluster.processes_with(str(pids))
        assert sorted(started) == sorted(host_of(cluster, a) for a in hosts.values()), started
    finally:
        run.kill()  # kill -9 of `cauce run`
    # Documented bound: the tasks see their link close and stop their commands within the
    # job's grace_period (a few seconds more under load).
    left = wait_until_none(cluster, str(pids), GRACE + SLACK)
    assert left == {}, left
    children = [int(p) for f in pids.glob("*.pids") for p in f.read_text().split()]
    assert len(children) == 4 and not [p for p in children if running(p)], children
    # The driver's own JVM goes with it (its stdin closes).
    deadline = time.monotonic() + SLACK
    while cluster.pids_in("d") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster.pids_in("d") == [], cluster.processes_with("")
