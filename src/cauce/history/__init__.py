"""The store of jobs, tasks, attempts and events; logs are files beside it."""

from __future__ import annotations

import os
from pathlib import Path

from cauce._util.procs import start_time
from cauce.errors import HistoryError
from cauce.history._liveness import driver_alive, refresh_job
from cauce.history._migrate import schema_lock
from cauce.history._status import JobStatus, TaskStatus
from cauce.history._url import (
    LOST_AFTER,
    connect_args,
    log_failure,
    lost_after,
    shown_url,
    unanswered,
)
from cauce.history.store import EventRow, HistoryStore, JobRow, MetricRow, TaskRow

__all__ = [
    "LOST_AFTER",
    "EventRow",
    "HistoryStore",
    "JobRow",
    "JobStatus",
    "MetricRow",
    "TaskRow",
    "TaskStatus",
    "cauce_home",
    "connect_args",
    "driver_alive",
    "log_failure",
    "lost_after",
    "open_store",
    "process_stamp",
    "refresh_job",
    "schema_lock",
    "shown_url",
    "unanswered",
]


def cauce_home() -> Path:
    """``$CAUCE_HOME``, by default ``~/.cauce``: the history database and run folders."""
    return Path(os.environ.get("CAUCE_HOME") or Path.home() / ".cauce").expanduser()


def open_store(url: str | None = None) -> HistoryStore:
    """The store at ``url``, ``$CAUCE_HISTORY``, or SQLite in ``cauce_home()``."""
    url = url or os.environ.get("CAUCE_HISTORY")
    if not url:
        home = cauce_home()
        try:
            home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file there, no permission, a read-only disk
            reason = "not a folder" if home.exists() else exc.strerror or type(exc).__name__
            raise HistoryError(
                f"cannot use {home} as cauce's home ({reason}): set $CAUCE_HOME to a folder "
                "you can write to"
            ) from None
        url = f"sqlite:///{home / 'history.db'}"
    return HistoryStore(url)


def process_stamp(pid: int) -> str | None:
    """What the history keeps of a process (a job's driver, a tuner) to know it again: its start
    time, since pids are reused. None when ``pid`` is gone."""
    start = start_time(pid)
    return None if start is None else str(start)
