"""The driver's rows in the history store: the job, each task attempt, and the events between.

One method per fact the driver learns; the driver decides, this only writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict

from cauce.cluster.api import TaskPlace
from cauce.errors import HistoryError
from cauce.gang import _machine as m
from cauce.gang._plan import AttemptPlan
from cauce.history import (
    HistoryStore,
    JobStatus,
    MetricRow,
    TaskStatus,
    log_failure,
    lost_after,
    process_stamp,
)
from cauce.spec import JobSpec

__all__ = ["JobRecord", "new_job_id"]

logger = logging.getLogger(__name__)


def new_job_id(name: str) -> str:
    """``NAME-YYYYmmdd-HHMMSS-xxxx``: the job's name, the local time and four hex digits."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime())
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


class JobRecord:
    def __init__(self, store: HistoryStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self._placed: dict[str, tuple[int, TaskPlace]] = {}  # task -> what was recorded
        self.ended = False  # how the job ended is recorded
        self._every = lost_after() / 6  # between two heartbeats (read: history/_liveness)
        self._reports: queue.Queue[list[MetricRow] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._failure: Exception | None = None  # what writing the reports met

    def submitted(
        self, spec: JobSpec, *, kind: str, cluster: str, run_dir: str, tasks: int
    ) -> None:
        self.store.create_job(
            id=self.job_id,
            name=spec.name,
            kind=kind,
            framework=spec.framework,
            status=JobStatus.PENDING,
            cluster=cluster,
            source=os.path.abspath(spec.source) if spec.source else "",
            spec=json.dumps(asdict(spec), default=str),
            run_dir=run_dir,
            host=socket.gethostname(),
            driver_pid=os.getpid(),
            driver_start=process_stamp(os.getpid()),
            seen_at=time.time(),
        )
        self.event("submitted", {"tasks": tasks})

    @contextlib.contextmanager
    def beating(self) -> Iterator[None]:
        """While the block runs, a thread says that the driver lives (``seen_at``), for hosts
        that cannot see its process, every ``lost_after() / 6`` seconds whatever the driver
        waits for: a cluster that takes minutes to start an application, a restart's backoff.
        Like the pid seen on this host, it says that the process lives, not that it is busy.
        A heartbeat that cannot be written is logged, not raised: the job goes on, and its
        next write says the rest."""
        stop = threading.Event()

        def beat() -> None:
            failing = False  # said once, not every beat, while the store does not answer
            while not stop.wait(self._every) and not self.ended:
                try:
                    self.store.update_job(self.job_id, seen_at=time.time())
                except HistoryError as exc:
                    if not failing:
                        log_failure(logger, exc, "job %s: no heartbeat written", self.job_id)
                    failing = True
                else:
                    if failing:
                        logger.warning("job %s: heartbeat written again", self.job_id)
                    failing = False

        thread = threading.Thread(target=beat, name=f"cauce-heartbeat-{self.job_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            # Not waited for longer: a write in flight to a database that stopped answering
            # ends within its time limit (history/_url.py), and the thread with it.
            thread.join(timeout=1.0)
            self._close()

    def metrics(self, rows: list[MetricRow]) -> None:
        """Write the tasks' reports on a thread of the record's own, in order, so that the
        driver's loop goes on seeing task exits, hangs and time limits while a database that
        does not answer is asked again (``history/_writes.py``); :meth:`check` raises what
        that thread met."""
        self.check()
        if self._writer is None:
            name = f"cauce-reports-{self.job_id}"
            self._writer = threading.Thread(target=self._write_reports, name=name, daemon=True)
            self._writer.start()
        self._reports.put(rows)

    def _write_reports(self) -> None:
        while (rows := self._reports.get()) is not None:
            try:
                if self._failure is None:  # after a failure the rest is dropped, not tried
                    self.store.add_metrics(self.job_id, rows)
            except Exception as exc:  # raised in the driver's thread, by check()
                self._failure = exc
            finally:
                self._reports.task_done()
        self._reports.task_done()

    def check(self) -> None:
        """Raise what writing the reports met (the history stopped answering), if anything."""
        if self._failure is not None:
            raise self._failure

    def _close(self) -> None:
        """Let the reports' thread end (with :meth:`beating`'s block); a write in flight ends
        within its time limit."""
        if self._writer is not None:
            self._reports.put(None)
            self._writer.join(timeout=1.0)

    def event(self, kind: str, data: Mapping[str, object]) -> None:
        self.store.add_event(self.job_id, kind, data=data)

    def waiting(self, reason: str) -> None:
        self.store.update_job(self.job_id, status=JobStatus.WAITING)
        self.event("waiting", {"reason": reason})

    def attempt_started(
        self, plan: AttemptPlan, attempt: int, pids: Mapping[str, int], *, first: bool
    ) -> None:
        now = time.time()
        for slot, launch in zip(plan.layout.slots, plan.launches, strict=True):
            self.store.upsert_task(
                self.job_id,
                slot.task_id,
                attempt,
                role=slot.role,
                role_index=slot.index,
                host=slot.host,
                port=slot.port,
                gpus=",".join(slot.gpus),
                pid=pids.get(slot.task_id),
                status=TaskStatus.RUNNING,
                started_at=now,
                log_path=launch.log_path,
            )
        if first:
            self.store.update_job(self.job_id, started_at=now)
        self.store.update_job(self.job_id, status=JobStatus.RUNNING, attempts=attempt + 1)
        self.store.add_event(self.job_id, "attempt_started", attempt=attempt, data=dict(pids))

    def places(self, attempt: int, places: Mapping[str, TaskPlace]) -> None:
        """Where tasks really run, once their cluster says (Spark's executors, as they start);
        each place is written once."""
        for task_id, place in places.items():
            if self._placed.get(task_id) == (attempt, place):
                continue
            self._placed[task_id] = (attempt, place)
            self.store.upsert_task(
                self.job_id,
                task_id,
                attempt,
                host=place.host,
                port=place.port,
                gpus=",".join(place.gpus),
                pid=place.pid,
            )

    def task_exited(self, exited: m.TaskExited, status: TaskStatus) -> None:
        self.store.upsert_task(
            self.job_id,
            exited.task_id,
            exited.attempt,
            status=status,
            exit_code=exited.returncode,
            ended_at=time.time(),
        )
        self.store.add_event(
            self.job_id,
            "task_exited",
            task_id=exited.task_id,
            attempt=exited.attempt,
            data={"returncode": exited.returncode, "runtime": round(exited.runtime, 3)},
        )

    def restarting(self, number: int, delay: float, cause: str) -> None:
        self.store.update_job(self.job_id, status=JobStatus.RESTARTING, restarts=number)
        self.event("restart", {"restart": number, "delay": delay, "cause": cause})

    def finished(self, status: JobStatus, cause: str, *, attempts: int, restarts: int) -> None:
        """The job's end, once every report queued before it is written."""
        if self._writer is not None and self._writer.is_alive():
            self._reports.join()
        self.check()
        self.store.update_job(
            self.job_id,
            status=status,
            ended_at=time.time(),
            root_cause=cause or None,
            restarts=restarts,
            attempts=attempts,
        )
        self.ended = True
        self.event("finished", {"status": status})
