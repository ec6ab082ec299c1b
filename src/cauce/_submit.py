"""``cauce.submit``: start a job and return at once, with a :class:`Job` to follow and steer it
(for notebooks and services). docs/python-api.md tells how to use it.

The job runs in a driver process of its own (``python -m cauce._detached``), in its own
session: the caller's thread is never busy with it, a notebook's interrupt does not reach it,
and the job survives the caller's exit, like a job started with ``cauce run`` in another
shell. It is stopped by :meth:`Job.kill` (SIGTERM to the driver, which stops the gang), by
``cauce kill ID``, and by a KeyboardInterrupt (Ctrl-C, a notebook's stop button) while
:meth:`Job.wait` waits for it. Even a ``kill -9`` of the driver leaves no task alive (its
watchdog, as for ``cauce run``).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cauce._util.yamlfile import load_yaml_file
from cauce.errors import CauceError, ClusterError, HistoryError, SpecError
from cauce.gang import JobResult, new_job_id
from cauce.history import (
    JobRow,
    JobStatus,
    MetricRow,
    cauce_home,
    driver_alive,
    open_store,
    refresh_job,
)
from cauce.spec import JobSpec, job_spec, load_job, parse_job

__all__ = ["Job", "submit"]

_POLL_S = 0.2


def _line(task_id: str, raw: bytes, prefix: bool) -> str:
    line = raw.decode("utf-8", errors="replace")
    return f"[{task_id}] {line}" if prefix else line


class Job:
    """A job in the history: the one :func:`submit` started, or any other (:meth:`attach`).

    Each call reads the history afresh (the driver writes it); a Job holds no open resource.
    """

    def __init__(
        self, job_id: str, *, history: str | None = None, process: subprocess.Popen[bytes] | None
    ) -> None:
        self.id = job_id
        self.history = history
        self._process = process

    @classmethod
    def attach(cls, job_id: str, *, history: str | None = None) -> Job:
        """The job ``job_id`` (or a unique prefix of one); HistoryError if there is none."""
        store = open_store(history)
        try:
            return cls(store.get_job(job_id).id, history=history, process=None)
        finally:
            store.close()

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def row(self) -> JobRow:
        """The job's row in the history: status, attempts, times, root cause..."""
        self._reap()
        store = open_store(self.history)
        try:
            return refresh_job(store, store.get_job(self.id))
        finally:
            store.close()

    def status(self) -> JobStatus:
        """pending, waiting, running, restarting, succeeded, failed, killed or lost."""
        return self.row().status

    def result(self) -> JobResult:
        """How the job ended, or stands: what :func:`cauce.run` returns."""
        row = self.row()
        return JobResult(
            job_id=row.id,
            status=row.status,
            root_cause=row.root_cause or "",
            attempts=row.attempts,
            restarts=row.restarts,
            run_dir=row.run_dir,
        )

    def wait(self, timeout: float | None = None) -> JobResult:
        """Wait until the job ends and return how; TimeoutError after ``timeout`` seconds
        (the job goes on). A KeyboardInterrupt while waiting (Ctrl-C, a notebook's interrupt)
        stops the job, then propagates."""
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                result = self.result()
                if not result.status.active:
                    self._exited(self.row())
                    return result
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"job {self.id} still {result.status} after {timeout:g} s")
                time.sleep(_POLL_S)
        except KeyboardInterrupt:
            self.kill()
            raise

    def metrics(self, task: str | None = None) -> list[MetricRow]:
        """Every value the job's tasks reported with ``cauce.report``, in order (``attempt``
        counts from 0 here, as ``cauce.context().attempt`` does)."""
        store = open_store(self.history)
        try:
            return store.get_metrics(self.id, task)
        finally:
            store.close()

    def _log_files(self, task: str | None) -> dict[str, str]:
        store = open_store(self.history)
        try:
            files = {row.task_id: row.log_path for row in store.get_tasks(self.id)}
        finally:
            store.close()
        if task is not None and task not in files:
            if self.status().active:
                return {}  # not started yet
            known = ", ".join(sorted(files)) or "none"
            raise HistoryError(f"job {self.id} has no task {task!r}; its tasks: {known}")
        return files if task is None else {task: files[task]}

    def logs(self, task: str | None = None, *, follow: bool = False) -> Iterator[str]:
        """The lines of the tasks' logs (``[worker-1] ...`` when several tasks), or of one
        ``task``; with ``follow``, new lines as they come until the job ends."""
        offsets: dict[str, int] = {}
        pending: dict[str, bytes] = {}
        while True:
            active = follow and self.status().active
            files = self._log_files(task)
            prefix = task is None and len(files) > 1
            for task_id, path in files.items():
                try:
                    with open(path, "rb") as file:
                        file.seek(offsets.get(task_id, 0))
                        data = file.read()
                except FileNotFoundError:
                    continue
                offsets[task_id] = offsets.get(task_id, 0) + len(data)
                *lines, pending[task_id] = (pending.get(task_id, b"") + data).split(b"\n")
                for raw in lines:
                    yield _line(task_id, raw, prefix)
            if not active:
                for task_id, rest in pending.items():
                    if rest:
                        yield _line(task_id, rest, prefix)
                return
            time.sleep(0.5)

    def kill(self, timeout: float = 30.0) -> JobStatus:
        """Stop the job (its gang gets SIGTERM, then SIGKILL after its grace period) and wait
        up to ``timeout`` seconds for it to end; returns its status. A job that already ended
        is left as it is."""
        row = self.row()
        if not row.status.active:
            return row.status
        alive = driver_alive(row)
        if alive is None:
            raise HistoryError(f"job {self.id} is driven from host {row.host}; stop it there")
        if alive and row.driver_pid is not None:
            os.kill(row.driver_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.row()
            if not row.status.active:
                self._exited(row)
                return row.status
            time.sleep(_POLL_S)
        raise HistoryError(f"job {self.id} did not stop within {timeout:g} s")

    def _exited(self, row: JobRow) -> None:
        """Once the job's end is recorded, wait (up to 30 s) for its driver to exit, so that
        nothing of the job runs on: collected if this process started it, else (a job of
        :meth:`attach`) watched until it is gone."""
        if self._process is not None:
            self._reap(wait=True)
            return
        deadline = time.monotonic() + 30
        while driver_alive(row) and time.monotonic() < deadline:
            time.sleep(_POLL_S)

    def _reap(self, wait: bool = False) -> None:
        """Collect the driver process (ours) once it exits, so that it leaves no zombie."""
        if self._process is not None:
            try:
                self._process.wait(timeout=30 if wait else 0)
            except subprocess.TimeoutExpired:
                return
            self._process = None


def _spec(
    job: JobSpec | str | os.PathLike[str] | Mapping[str, Any], overrides: dict[str, Any]
) -> JobSpec:
    if not overrides:
        return job_spec(job)
    if isinstance(job, JobSpec):
        raise SpecError(
            "",
            f"cannot override {', '.join(overrides)} of a JobSpec: give the job's file "
            "or mapping, or change the spec with dataclasses.replace",
        )
    if isinstance(job, Mapping):
        return parse_job({**job, **overrides}, base_dir=os.getcwd())
    file = Path(job)
    data = load_yaml_file(file, what="job file")
    if not isinstance(data, Mapping):
        return load_job(job)  # its own error
    return parse_job({**data, **overrides}, source=str(file), base_dir=file.resolve().parent)


def _raise_from(payload: Mapping[str, Any]) -> None:
    """Raise the error the driver was refused with, as the same class."""
    module = importlib.import_module(str(payload["module"]))
    kind = getattr(module, str(payload["class"]), None)
    if not (isinstance(kind, type) and issubclass(kind, CauceError)):
        raise ClusterError(str(payload["message"]))
    exc = kind.__new__(kind)
    Exception.__init__(exc, payload["message"])
    for key, value in dict(payload.get("attrs", {})).items():
        setattr(exc, key, value)
    raise exc


def submit(
    job: JobSpec | str | os.PathLike[str] | Mapping[str, Any],
    *,
    cluster: str | None = None,
    history: str | None = None,
    home: str | os.PathLike[str] | None = None,
    start_timeout: float = 120.0,
    **overrides: Any,
) -> Job:
    """Start a job and return once it is recorded (it is being placed, or waits for resources).

    ``job`` is a job file's path, a mapping of its fields, or a :class:`JobSpec`.
    ``overrides`` replace top-level fields of the file or mapping (``name="lr-test"``,
    ``timeout=600``, ``env={"LR": "0.1"}``) and are validated with them. Raises what
    ``cauce run`` would refuse with: SpecError for a bad field or workdir, PlacementError for a
    gang that can never fit (exit code 2 on the command line).
    """
    spec = _spec(job, overrides)
    job_id = new_job_id(spec.name)
    request = {
        "spec": spec,
        "job_id": job_id,
        "cluster": cluster,
        "history": history,
        "home": str(Path(home) if home is not None else cauce_home()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cauce._detached"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(pickle.dumps(request))
        process.stdin.close()
        ready, _, _ = select.select([process.stdout], [], [], start_timeout)
        line = process.stdout.readline() if ready else b""
    except BaseException:  # Ctrl-C before the job has a handle: no job is left running
        process.terminate()
        process.wait()
        raise
    finally:
        process.stdout.close()
    if not line:
        if process.poll() is None:
            process.terminate()
        process.wait()
        raise ClusterError(
            f"the driver of job {job_id} did not start within {start_timeout:g} s "
            f"(exit {process.returncode}); see {request['home']}/runs/{job_id}/driver.log"
        )
    answer = json.loads(line)
    if "error" in answer:
        process.wait()
        _raise_from(answer["error"])
    return Job(job_id, history=history, process=process)
