"""Whether a job's driver still lives, and marking the job ``lost`` when it died without a word
(``kill -9``): what ``cauce jobs``, ``cauce show`` and :class:`cauce.Job` read."""

from __future__ import annotations

import socket
import time

from cauce._util.procs import start_time
from cauce.history._status import JobStatus
from cauce.history.store import HistoryStore, JobRow

__all__ = ["driver_alive", "refresh_job"]


def driver_alive(job: JobRow) -> bool | None:
    """True/False for a job whose driver runs on this host; None when it runs elsewhere."""
    if job.host != socket.gethostname() or job.driver_pid is None:
        return None
    start = start_time(job.driver_pid)  # as process_stamp() keeps it
    return (None if start is None else str(start)) == job.driver_start


def refresh_job(store: HistoryStore, job: JobRow) -> JobRow:
    """``job``, marked lost first when it is active but its driver died without a word."""
    if job.status.active and driver_alive(job) is False:
        cause = f"the driver (pid {job.driver_pid}) died without finishing the job"
        store.update_job(job.id, status=JobStatus.LOST, root_cause=cause, ended_at=time.time())
        return store.get_job(job.id)
    return job
