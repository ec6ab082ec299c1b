"""Which jobs a command means: ``cauce show NAME`` (the latest job of that name), id prefixes,
and the filters of ``cauce jobs`` (``--status``, ``--since``)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

from cauce.errors import SpecError
from cauce.history import HistoryStore, JobRow, JobStatus

__all__ = ["JOB_REF", "STATUSES", "find_job", "since_time", "statuses_of"]

#: the help of a command's job argument
JOB_REF = "a job id, a unique prefix of one, or a job name (its latest job)"
STATUSES = ", ".join(JobStatus)


def find_job(store: HistoryStore, ref: str) -> JobRow:
    """The job ``ref`` names (id, id prefix, or name: the latest of that name); when a name
    stands for several jobs, stderr says which one was picked."""
    job, count = store.find_job(ref)
    if count > 1:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created_at))
        sys.stderr.write(
            f"cauce: {count} jobs are named {ref}; this is the latest, {job.id} (created "
            f"{when}); give an id for another\n"
        )
    return job


def since_time(text: str | None) -> float | None:
    """``--since``: a duration back from now, or a date or time (local)."""
    if text is None:
        return None
    import datetime as dt

    from cauce.spec import parse_duration

    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text, "--since")
    except SpecError:
        raise SpecError(
            "--since",
            f"must be a duration like 90s, 10m, 1h, 2d or a date like 2026-11-30 or "
            f"'2026-11-30 14:00', got {text!r}",
        ) from None


def statuses_of(values: Sequence[str]) -> list[str]:
    wanted = [part.strip() for value in values for part in value.split(",") if part.strip()]
    for status in wanted:
        if status not in JobStatus.__members__.values():
            raise SpecError("--status", f"must be one of {STATUSES}, got {status!r}")
    return wanted
