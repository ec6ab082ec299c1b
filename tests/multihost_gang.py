"""The gang contract's third target: jobs run by a cauce driver on the multi-host cluster's
driver host (``tests/bin/gang_driver.py``, one warm Spark application, steered over its stdin),
with the tasks on the worker hosts. What the tests read back is the same as in-process: a
``JobResult``, the console's text, the history in the test's folder (hosts share files).
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cauce
from cauce.history import JobStatus, open_store
from helpers import BIN
from multihost import GPUS_PER_WORKER, MultiHost
from spark_fixtures import Target

#: Settings of the driver's application (the workers have 1 core, 1g and 2 GPUs each).
CONF = {
    "spark.executor.memory": "512m",
    "spark.executor.resource.gpu.amount": str(GPUS_PER_WORKER),
    "spark.cauce.placementTimeout": "90",
}


class RemoteDriver:
    """``gang_driver.py`` on host ``d``: started warm, one job at a time."""

    def __init__(self, cluster: MultiHost, timeout: float = 300) -> None:
        self.cluster = cluster
        self.log_path = cluster.folder / "gang_driver.log"
        self._log: IO[str] = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115
        argv = [sys.executable, str(BIN / "gang_driver.py"), cluster.master, json.dumps(CONF)]
        self.proc = cluster.popen_on(
            "d", [*argv, str(cluster.workers)], stdin=subprocess.PIPE, stderr=self._log
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.expect("ready", timeout)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def send(self, request: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()

    def expect(self, key: str, timeout: float) -> dict[str, Any]:
        """The next message with ``key`` (others before it are dropped)."""
        while True:
            try:
                message = self._lines.get(timeout=timeout)
            except queue.Empty:
                why = f"no {key!r} from the driver in {timeout} s: {self.tail()}"
                raise AssertionError(why) from None
            if message is None:
                raise AssertionError(f"the driver process ended: {self.tail()}")
            if key in message:
                return message

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.send({"quit": True})
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            self.proc.wait(timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self._log.close()


@dataclass
class MultiHostTarget(Target):
    cluster: MultiHost | None = None
    remote: RemoteDriver | None = None


class RemoteJob:
    """A job the remote driver runs in the background, steered like an in-process JobDriver."""

    def __init__(self, target: MultiHostTarget, home: Path, job: Path, poll: float = 1.0):
        assert target.remote is not None
        self.target, self.home, self.remote = target, home, target.remote
        self.ended = False
        self.remote.send(
            {"run": str(job), "home": str(home), "history": history(home), "poll": poll}
        )

    def stop(self, reason: str) -> None:
        self.remote.send({"stop": reason})

    def ask_to_stop(self, reason: str) -> None:
        self.remote.send({"ask_to_stop": reason})

    def wait_reported(self, timeout: float) -> bool:
        self.remote.expect("reported", timeout)
        return True

    def result(self, timeout: float = 600) -> tuple[cauce.JobResult, str]:
        message = self.remote.expect("result", timeout)
        self.ended = True
        fields = dict(message["result"])
        fields["status"] = JobStatus(fields["status"])
        result = cauce.JobResult(**fields)
        hosts_of(self.home, result.job_id, self.target)
        return result, str(message["console"])

    def close(self) -> None:
        """Stop the job if the test left it running (so that the next one runs alone)."""
        if not self.ended:
            self.stop("test cleanup")
            with contextlib.suppress(AssertionError):
                self.remote.expect("result", 120)
            self.ended = True


def history(home: Path) -> str:
    return f"sqlite:///{home.parent / 'history.db'}"


def hosts_of(home: Path, job_id: str, target: MultiHostTarget) -> dict[str, str]:
    """task -> host of its last attempt, from the history; asserts that they are worker hosts
    and that the gang spans at least two of them."""
    assert target.cluster is not None
    store = open_store(history(home))
    try:
        tasks = store.get_tasks(job_id)
    finally:
        store.close()
    last = {t.task_id: t for t in sorted(tasks, key=lambda t: t.attempt)}
    hosts = {task: str(row.host) for task, row in last.items()}
    workers = {target.cluster.hosts[h] for h in target.cluster.worker_hosts}
    assert set(hosts.values()) <= workers, hosts
    if len(hosts) > 1:
        assert len(set(hosts.values())) >= 2, f"one gang, one host: {hosts}"
    return hosts


def tasks_left(cluster: MultiHost, within: float = 10.0) -> list[str]:
    """Processes on the worker hosts that are neither Spark's JVMs nor PySpark's workers,
    waiting up to ``within`` seconds for them to go."""
    deadline = time.monotonic() + within
    while True:
        left = _others(cluster)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _others(cluster: MultiHost) -> list[str]:
    left = []
    for host in cluster.worker_hosts:
        for pid in cluster.pids_in(host):
            try:
                line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "java" in line.split(" ")[0] or "pyspark.daemon" in line or "pyspark/daemon" in line:
                continue
            if "pyspark.worker" in line or not line.strip():
                continue
            left.append(f"{host} {pid} {line[:100]}")
    return left


def _on_driver(cluster: MultiHost, code: str) -> str:
    done = cluster.run_on("d", [sys.executable, "-c", code], timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def s3_folder(target: Target, name: str) -> str:
    """A fresh ``s3://`` folder on the cluster's store (its bucket made from the driver host)."""
    assert isinstance(target, MultiHostTarget) and target.cluster is not None
    bucket = f"contract-{uuid.uuid4().hex[:12]}"
    _on_driver(target.cluster, f"import s3fs; s3fs.S3FileSystem().mkdir({bucket!r})")
    return f"s3://{bucket}/{name}"


def s3_keys(cluster: MultiHost, folder: str) -> list[str]:
    """The objects under ``folder`` on the cluster's store, relative to it, sorted."""
    code = f"import json, s3fs; print(json.dumps(s3fs.S3FileSystem().find({folder!r})))"
    root = folder.removeprefix("s3://").rstrip("/") + "/"
    return sorted(k.removeprefix(root) for k in json.loads(_on_driver(cluster, code)))
