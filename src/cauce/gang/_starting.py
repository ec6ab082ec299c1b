"""Getting an attempt of a gang going: waiting until the cluster places it (saying why it
waits), and how a job ends when its cluster refuses to start an attempt or its driver breaks.

A job whose row exists always ends in the history store: a cluster that cannot start the
tasks (:class:`~cauce.errors.ClusterError` from ``Cluster.start``) fails the job with that
error as its root cause, and any error that escapes the driver is recorded before it is raised,
so that no row is left running after its driver has given up; unless the history itself stopped
answering, which the error then says.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable

from cauce.cluster.api import Waiting
from cauce.errors import CauceError, ClusterError, HistoryError
from cauce.gang import _machine as m
from cauce.gang._console import Console
from cauce.gang._record import JobRecord
from cauce.history import HistoryStore, JobStatus, log_failure, unanswered

__all__ = ["history_gone", "record_crash", "start_refused", "wait_until_placed"]

logger = logging.getLogger(__name__)


def wait_until_placed(
    place: Callable[[], Waiting | None],
    events: queue.SimpleQueue[m.Event],
    poll_interval: float,
    console: Console,
    record: JobRecord,
) -> m.StopRequested | None:
    """Call ``place`` until it places the gang (None), saying what it waits for; the stop
    request that came meanwhile, if one did."""
    last = ""
    while True:
        got = place()
        if got is None:
            return None
        if got.reason != last:
            last = got.reason
            console.status(f"waiting: {got.reason}")
            record.waiting(got.reason)
        try:
            event = events.get(timeout=poll_interval)
        except queue.Empty:
            continue
        if isinstance(event, m.StopRequested):
            return event


def start_refused(exc: ClusterError, attempt: int, cluster: str, earlier_cause: str) -> m.Finish:
    """How a job ends when its cluster cannot start attempt ``attempt`` (0-based): failed, with
    the cluster's error as the root cause (after the failure that led to a restart, if any)."""
    which = "the restart" if attempt else "the gang"
    cause = f"the {cluster} cluster could not start {which} (attempt {attempt + 1}): {exc}"
    return m.Finish(JobStatus.FAILED, reason="\n".join(filter(None, (earlier_cause, cause))))


def history_gone(job_id: str, store: HistoryStore, exc: Exception) -> HistoryError | None:
    """What to raise when the driver failed because its history stopped answering (nothing more
    can be recorded there, the end of the job included); None for any other failure."""
    words = unanswered(exc)
    if words is None:
        return None
    return HistoryError(
        f"job {job_id} stopped: its history {store.shown} stopped answering ({words}); there "
        "it shows running until a host that reads it marks it lost; run it again once the "
        "database answers"
    )


def record_crash(record: JobRecord, exc: Exception, *, attempts: int, restarts: int) -> None:
    """Record as failed a job whose driver raises ``exc`` before it recorded how it ended.
    The store may be what failed: then the row stays as it is, with a warning in the log."""
    if record.ended:
        return
    cause = str(exc) if isinstance(exc, CauceError) else f"{type(exc).__name__}: {exc}"
    try:
        record.finished(
            JobStatus.FAILED, f"the driver failed: {cause}", attempts=attempts, restarts=restarts
        )
    except Exception as stored:  # the original error is the one to raise; this one is logged
        log_failure(
            logger, stored, "cannot record the end of job %s", record.job_id, level=logging.WARNING
        )
