"""The store of jobs, tasks, attempts and events; logs are files beside it."""

from __future__ import annotations

import os
from pathlib import Path

from cauce.history._status import JobStatus, TaskStatus
from cauce.history.store import EventRow, HistoryStore, JobRow, MetricRow, TaskRow

__all__ = [
    "EventRow",
    "HistoryStore",
    "JobRow",
    "JobStatus",
    "MetricRow",
    "TaskRow",
    "TaskStatus",
    "cauce_home",
    "open_store",
]


def cauce_home() -> Path:
    """``$CAUCE_HOME``, by default ``~/.cauce``: the history database and run folders."""
    return Path(os.environ.get("CAUCE_HOME") or Path.home() / ".cauce").expanduser()


def open_store(url: str | None = None) -> HistoryStore:
    """The store at ``url``, ``$CAUCE_HISTORY``, or SQLite in ``cauce_home()``."""
    url = url or os.environ.get("CAUCE_HISTORY")
    if not url:
        home = cauce_home()
        home.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{home / 'history.db'}"
    return HistoryStore(url)
