"""A real Spark standalone cluster on 127.0.0.1 for the tests (and the benchmark).

One master and two workers of one core each, started with the ``sbin/spark-daemon.sh`` script of
the installed pyspark, on free ports; each worker declares two GPUs through a discovery script
(``spark.worker.resource.gpu.amount=2``), so GPU scheduling is real Spark scheduling of GPUs that
do not exist. The daemons are detached (as ``start-master.sh`` would start them): their pids come
from the pid files, and :meth:`StandaloneSpark.stop` ends them by pid; a watchdog child ends them
too if the test process dies without its teardown.

Since executors and their Python workers are the daemons' children, not the test process's, the
generic leak check of ``conftest.py`` cannot see them; :meth:`StandaloneSpark.tasks_left` is the
same check for them: any process under a worker that is neither a JVM nor one of PySpark's
Python workers is a task process that outlived its job.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

import cauce
from helpers import free_port

GPUS_PER_WORKER = 2
WORKERS = 2


#: Started with the cluster, fed nothing: when its stdin closes, because the tests ended or
#: because the test process died without its teardown (a timeout's SIGTERM, kill -9), it stops
#: the daemons listed in the pid files, so that no cluster outlives its test run.
_WATCHDOG = """
import os, pathlib, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
folder = pathlib.Path(sys.argv[1])
sys.stdin.buffer.read()
pids = []
for path in folder.glob("*.pid"):
    try:
        pid = int(path.read_text().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            if b"org.apache.spark.deploy" not in file.read():
                continue
        os.kill(pid, signal.SIGTERM)
        pids.append(pid)
    except (OSError, ValueError, IndexError):
        continue
deadline = time.monotonic() + 20
while pids and time.monotonic() < deadline:
    time.sleep(0.2)
    pids = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
for pid in pids:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


def _pid_files(folder: Path) -> list[int]:
    pids = []
    for path in folder.glob("*.pid"):
        try:
            pids.append(int(path.read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            continue
    return pids


class StandaloneSpark:
    """A master and ``workers`` workers of one core; ``conf`` is what an application needs."""

    def __init__(self, folder: Path, workers: int = WORKERS) -> None:
        import pyspark

        self.folder = folder
        self.workers = workers
        self.home = Path(pyspark.__file__).parent
        self.port, self.ui_port = free_port(), free_port()
        self.master = f"spark://127.0.0.1:{self.port}"
        self.pids: list[int] = []
        script = folder / "gpus.sh"
        addresses = json.dumps([str(i) for i in range(GPUS_PER_WORKER)])
        script.write_text(f'#!/bin/sh\necho \'{{"name": "gpu", "addresses": {addresses}}}\'\n')
        script.chmod(0o755)
        (folder / "conf").mkdir(exist_ok=True)
        self.env = {
            **os.environ,
            "SPARK_HOME": str(self.home),
            "SPARK_CONF_DIR": str(folder / "conf"),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_PID_DIR": str(folder / "pids"),
            "SPARK_LOG_DIR": str(folder / "logs"),
            "SPARK_IDENT_STRING": "cauce-tests",
            "SPARK_DAEMON_MEMORY": "256m",
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_WORKER_OPTS": (
                f"-Dspark.worker.resource.gpu.amount={GPUS_PER_WORKER} "
                f"-Dspark.worker.resource.gpu.discoveryScript={script}"
            ),
        }
        #: Settings of an application on this cluster (everything bound to 127.0.0.1).
        self.conf = {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.port": "0",
            "spark.pyspark.python": sys.executable,
            "spark.executor.memory": "512m",
            "spark.executor.resource.gpu.amount": str(GPUS_PER_WORKER),
            "spark.cauce.placementTimeout": "60",
        }

    # --- start and stop ------------------------------------------------------------------------

    def _daemon(self, cls: str, instance: int, *args: str) -> None:
        # A session of its own: Ctrl-C in the terminal is for pytest, not for the daemons.
        done = subprocess.run(
            [
                "bash",
                str(self.home / "sbin" / "spark-daemon.sh"),
                "start",
                cls,
                str(instance),
                *args,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            start_new_session=True,
        )
        if done.returncode != 0 or "failed to launch" in done.stdout:
            raise RuntimeError(f"cannot start {cls}: {done.stdout}{done.stderr}")

    def _pid(self, cls: str, instance: int) -> int:
        path = self.folder / "pids" / f"spark-cauce-tests-{cls}-{instance}.pid"
        return int(path.read_text().strip())

    def start(self, timeout: float = 180.0) -> None:
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.folder / "pids")],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )
        master = "org.apache.spark.deploy.master.Master"
        worker = "org.apache.spark.deploy.worker.Worker"
        self._daemon(
            master, 1, "--host", "127.0.0.1", "--port", str(self.port),
            "--webui-port", str(self.ui_port),
        )  # fmt: skip
        self.pids.append(self._pid(master, 1))

        def one(i: int) -> None:
            self._daemon(
                worker, i, "--host", "127.0.0.1", "--port", str(free_port()),
                "--webui-port", str(free_port()), "--cores", "1", "--memory", "1g",
                "--work-dir", str(self.folder / f"work-{i}"), self.master,
            )  # fmt: skip

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(one, range(1, self.workers + 1)))
        self.pids.extend(self._pid(worker, i) for i in range(1, self.workers + 1))
        deadline = time.monotonic() + timeout
        while self.state().get("aliveworkers", 0) < self.workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not register: {self.state()}")
            time.sleep(0.3)

    def state(self) -> dict[str, Any]:
        """The master's JSON (``/json``): workers, cores, GPUs, applications."""
        try:
            url = f"http://127.0.0.1:{self.ui_port}/json"
            with urllib.request.urlopen(url, timeout=5) as response:
                found: dict[str, Any] = json.loads(response.read())
                return found
        except urllib.error.HTTPError as exc:  # it holds the connection's socket
            exc.close()
            return {}
        except OSError:
            return {}

    def stop(self) -> None:
        procs = []
        for pid in {*self.pids, *_pid_files(self.folder / "pids")}:
            try:
                proc = psutil.Process(pid)
                if "org.apache.spark.deploy" in " ".join(proc.cmdline()):
                    procs.append(proc)
                    proc.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(procs, timeout=20)
        for proc in alive:
            proc.kill()
        psutil.wait_procs(alive, timeout=10)
        watchdog = getattr(self, "_watchdog", None)
        if watchdog is not None and watchdog.stdin is not None:
            watchdog.stdin.close()  # nothing left for it to stop: it exits
            watchdog.wait(timeout=30)

    # --- checks ------------------------------------------------------------------------------

    def worker_procs(self) -> list[psutil.Process]:
        found = []
        for pid in self.pids[1:]:
            try:
                found.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        return found

    def tasks_left(self, within: float = 10.0) -> list[str]:
        """Processes under the workers that are neither JVMs nor PySpark's Python workers,
        waiting up to ``within`` seconds for them to go."""
        deadline = time.monotonic() + within
        while True:
            left = []
            for worker in self.worker_procs():
                for proc in worker.children(recursive=True):
                    try:
                        if proc.status() == psutil.STATUS_ZOMBIE:
                            continue
                        line = " ".join(proc.cmdline())
                    except psutil.NoSuchProcess:
                        continue
                    if proc.name() == "java" or "pyspark.daemon" in line:
                        continue
                    left.append(f"{proc.pid} {line[:100]}")
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.1)


def start_gateway() -> Any:
    """Start PySpark's JVM gateway (a child of this process) bound to 127.0.0.1, before a test
    runs, so that the generic leak check does not take it for a leak. Returns its process if
    this call started it (None if it was running already)."""
    from pyspark import SparkContext

    if SparkContext._gateway is not None:
        return None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARK_LOCAL_IP", "127.0.0.1")
        SparkContext._ensure_initialized()
    return SparkContext._gateway.proc


def stop_gateway(proc: Any) -> None:
    """Stop the JVM gateway that :func:`start_gateway` started, by its pid."""
    from pyspark import SparkContext

    if proc is None or SparkContext._active_spark_context is not None:
        return
    gateway, SparkContext._gateway, SparkContext._jvm = SparkContext._gateway, None, None
    try:
        gateway.shutdown()
    finally:
        if proc.stdin is not None:
            proc.stdin.close()  # the JVM exits when its stdin closes
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session", name="spark_cluster")
def spark_cluster_fixture() -> Iterator[StandaloneSpark]:
    """The standalone cluster, for the whole test session."""
    pytest.importorskip("pyspark")
    folder = Path(tempfile.mkdtemp(prefix="cauce-spark-"))
    cluster = StandaloneSpark(folder)
    gateway = None
    try:
        cluster.start()
        gateway = start_gateway()
        yield cluster
    finally:
        stop_gateway(gateway)
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


class HeldApp:
    """A Spark application on the cluster, kept open (warm executors, Python workers started)
    while a module's tests run in this process; cauce's drivers in the tests share it."""

    def __init__(self, cluster: StandaloneSpark) -> None:
        from cauce.cluster import get_cluster
        from cauce.cluster.spark import SparkCluster

        self.cluster = cluster
        held = get_cluster(cluster.master, spark_conf=cluster.conf)
        assert isinstance(held, SparkCluster)
        self.held = held
        shared = held.session()
        deadline = time.monotonic() + 120
        while len(shared.executors()) < cluster.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("the executors did not register")
            time.sleep(0.2)
        # The first Python task of an executor starts PySpark's daemon there: do it now.
        # (count() on the JVM: PySpark's collect() leaves a socket for the GC, a ResourceWarning)
        shared.sc.parallelize(range(cluster.workers), cluster.workers).map(str)._jrdd.count()

    def close(self) -> None:
        from cauce.cluster.spark._session import SharedSpark

        self.held.close()
        left = SharedSpark._current
        if left is not None:
            # A cluster object that was never closed (the tuner's probe, say) would keep the
            # application, and the workers' cores, for the rest of the session.
            left.users = 1
            left.release()


def held_app(cluster: StandaloneSpark) -> Iterator[HeldApp]:
    app = HeldApp(cluster)
    try:
        yield app
    finally:
        app.close()


# --- running jobs in this process, on local or spark ------------------------------------------


@dataclass
class Target:
    name: str
    address: str
    spark: StandaloneSpark | None = None


@dataclass
class Console:
    """Collects what a driver says and what its tasks print. Thread-safe."""

    lines: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def status(self, text: str) -> None:
        with self.lock:
            self.lines.append(f"cauce: {text}")

    def output(self, task_id: str, line: str) -> None:
        with self.lock:
            self.lines.append(f"[{task_id}] {line}")

    @property
    def text(self) -> str:
        with self.lock:
            return "\n".join(self.lines)


@pytest.fixture(name="home")
def home_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated CAUCE_HOME for jobs run in this process (its parent is the test's folder)."""
    folder = tmp_path / "home"
    monkeypatch.setenv("CAUCE_HOME", str(folder))
    monkeypatch.setenv("CAUCE_LEASE_DIR", str(tmp_path / "leases"))
    for name in ("CAUCE_HISTORY", "CAUCE_CLUSTER", "CAUCE_GPUS", "CAUCE_QUIET"):
        monkeypatch.delenv(name, raising=False)
    return folder


def job_file(folder: Path, text: str) -> Path:
    path = folder / "job.yaml"
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def run(target: Target, home: Path, text: str) -> tuple[cauce.JobResult, Console]:
    console = Console()
    result = cauce.run(
        job_file(home.parent, text),
        cluster=target.address,
        home=home,
        history=f"sqlite:///{home.parent / 'history.db'}",
        console=console,
    )
    if target.spark is not None:
        assert target.spark.tasks_left() == [], "task processes outlived the job on Spark"
    return result, console
