"""Reads of the history store for the pages: one page of jobs at a time (filtered, newest
first, counted), and a job's pieces through the store's own reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cauce.history import HistoryStore, JobRow, JobStatus, refresh_job
from cauce.history.store import jobs

__all__ = ["PAGE_SIZE", "JobsPage", "fresh_job", "job_dict", "jobs_page"]

PAGE_SIZE = 50
_ACTIVE_LIMIT = 1000  # active jobs looked at per page drawn: the newest


def fresh_job(store: HistoryStore, job_id: str) -> JobRow:
    """The job of this id (or unique prefix), marked lost first if its driver died."""
    return refresh_job(store, store.get_job(job_id))


@dataclass(frozen=True)
class JobsPage:
    rows: list[JobRow]
    total: int
    page: int
    pages: int


def jobs_page(
    store: HistoryStore, *, status: str = "", name: str = "", page: int = 1, size: int = PAGE_SIZE
) -> JobsPage:
    """Jobs whose status is ``status`` and whose name contains ``name`` (both optional); the
    active jobs whose driver died are marked lost first, as ``cauce jobs`` does."""
    for job in store.list_jobs(_ACTIVE_LIMIT, statuses=[s for s in JobStatus if s.active]):
        refresh_job(store, job)
    where: list[Any] = []
    if status:
        where.append(jobs.c.status == status)
    if name:
        where.append(jobs.c.name.contains(name, autoescape=True))
    count = sa.select(sa.func.count()).select_from(jobs).where(*where)
    with store.engine.connect() as conn:
        total = int(conn.execute(count).scalar_one())
        pages = max(1, -(-total // size))
        page = min(max(1, page), pages)
        query = (
            sa.select(jobs)
            .where(*where)
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(size)
            .offset((page - 1) * size)
        )
        rows = [
            JobRow(**{**row._mapping, "status": JobStatus(row.status)})
            for row in conn.execute(query)
        ]
    return JobsPage(rows, total, page, pages)


def duration(job: JobRow, now: float) -> float | None:
    if job.started_at is None:
        return None
    return (job.ended_at or now) - job.started_at


def job_dict(job: JobRow, now: float) -> dict[str, Any]:
    """What the jobs list shows of a job, as JSON for the live table."""
    return {
        "id": job.id,
        "name": job.name,
        "status": str(job.status),
        "framework": job.framework,
        "cluster": job.cluster,
        "started": job.started_at or job.created_at,
        "duration": duration(job, now),
        "attempts": job.attempts,
        "restarts": job.restarts,
    }
