"""Whether a job's driver still lives, and marking the job ``lost`` when it died without a word
(``kill -9``, a host that went down): what ``cauce jobs``, ``cauce show`` and :class:`cauce.Job`
read.

A driver on this host is alive while its process is (pid and start time). One on another host,
whose processes cannot be seen from here, writes a heartbeat into its job's row (``seen_at``,
its host's clock) every ``lost_after() / 6`` seconds; a job not seen for ``lost_after()`` seconds
by this host's clock is lost (the hosts' clocks are taken to agree within seconds, as NTP keeps
them). Tuners use the same setting for each other's trials (``cauce.tune._recovery``).
"""

from __future__ import annotations

import socket
import time

from cauce._util.procs import start_time
from cauce.history._status import JobStatus
from cauce.history._url import lost_after
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
    if not job.status.active:
        return job
    alive = driver_alive(job)
    if alive is False:
        cause = f"the driver (pid {job.driver_pid}) died without finishing the job"
    elif alive is None and job.seen_at is not None:
        limit = lost_after()
        if time.time() - job.seen_at < limit:
            return job
        cause = (
            f"the driver (pid {job.driver_pid} on {job.host}) sent no heartbeat for {limit:g} s: "
            "its host is down or cut off from the history"
        )
    else:
        return job
    store.update_job(job.id, status=JobStatus.LOST, root_cause=cause, ended_at=time.time())
    return store.get_job(job.id)
