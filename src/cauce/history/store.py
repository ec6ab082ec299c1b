"""The history store: jobs, task attempts and events, through SQLAlchemy.

SQLite by default (``$CAUCE_HOME/history.db``, WAL mode so concurrent drivers can write), any
SQLAlchemy URL otherwise (PostgreSQL for teams). Logs are files in the job's run folder; the
store keeps their paths. Safe to use from several threads: each call takes its own connection.
The schema is versioned: opening a store migrates its database (``migrations/``); the tables
below are the newest revision's.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.engine import Engine

from cauce.errors import HistoryError
from cauce.history._migrate import migrate
from cauce.history._status import JobStatus, TaskStatus
from cauce.history._url import connect_args, lost_after, shown_url, why
from cauce.history._writes import Writer

__all__ = ["EventRow", "HistoryStore", "JobRow", "MetricRow", "TaskRow"]

T = TypeVar("T")

_meta = sa.MetaData()

jobs = sa.Table(
    "jobs",
    _meta,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False, default="job"),
    sa.Column("framework", sa.String(20), nullable=False, default="none"),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("cluster", sa.String(200), nullable=False, default="local"),
    sa.Column("source", sa.Text, nullable=False, default=""),
    sa.Column("spec", sa.Text, nullable=False, default=""),
    sa.Column("run_dir", sa.Text, nullable=False, default=""),
    sa.Column("host", sa.String(200), nullable=False, default=""),
    sa.Column("driver_pid", sa.Integer),
    sa.Column("driver_start", sa.String(40)),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("started_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("restarts", sa.Integer, nullable=False, default=0),
    sa.Column("root_cause", sa.Text),
    sa.Column("seen_at", sa.Float),  # the driver's last heartbeat (revision 0003)
)

tasks = sa.Table(
    "tasks",
    _meta,
    sa.Column("job_id", sa.String(200), sa.ForeignKey("jobs.id"), primary_key=True),
    sa.Column("task_id", sa.String(200), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column("role", sa.String(40), nullable=False),
    sa.Column("role_index", sa.Integer, nullable=False),
    sa.Column("host", sa.String(200), nullable=False, default=""),
    sa.Column("port", sa.Integer),
    sa.Column("gpus", sa.String(200), nullable=False, default=""),
    sa.Column("pid", sa.Integer),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("exit_code", sa.Integer),
    sa.Column("started_at", sa.Float),
    sa.Column("ended_at", sa.Float),
    sa.Column("log_path", sa.Text, nullable=False, default=""),
)

events = sa.Table(
    "events",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(200), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("task_id", sa.String(200)),
    sa.Column("attempt", sa.Integer),
    sa.Column("data", sa.Text, nullable=False, default="{}"),
)

metrics = sa.Table(
    "metrics",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(200), sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("task_id", sa.String(200), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("name", sa.String(120), nullable=False),
    sa.Column("value", sa.Float),  # NULL when not finite: SQL has no NaN
    sa.Column("nonfinite", sa.String(4)),  # then which it was: nan, inf or -inf
)

_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


@dataclass(frozen=True)
class MetricRow:
    """One reported value; ``value`` may be NaN or infinite (stored as NULL and a word)."""

    task_id: str
    attempt: int
    step: int
    ts: float
    name: str
    value: float


@dataclass(frozen=True)
class JobRow:
    id: str
    name: str
    kind: str
    framework: str
    status: JobStatus
    cluster: str
    source: str
    spec: str
    run_dir: str
    host: str
    driver_pid: int | None
    driver_start: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    attempts: int
    restarts: int
    root_cause: str | None
    seen_at: float | None = None


@dataclass(frozen=True)
class TaskRow:
    job_id: str
    task_id: str
    attempt: int
    role: str
    role_index: int
    host: str
    port: int | None
    gpus: str
    pid: int | None
    status: TaskStatus
    exit_code: int | None
    started_at: float | None
    ended_at: float | None
    log_path: str


@dataclass(frozen=True)
class EventRow:
    id: int
    job_id: str
    ts: float
    kind: str
    task_id: str | None
    attempt: int | None
    data: dict[str, Any]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class HistoryStore:
    def __init__(self, url: str) -> None:
        self.url = url  # what processes connect with (the tasks, the studies): may hold a password
        self.shown = shown_url(url)  # for messages
        try:
            self.engine: Engine = sa.create_engine(url, future=True, connect_args=connect_args(url))
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise HistoryError(f"history URL {self.shown!r} is not usable: {exc}") from exc
        if self.engine.dialect.name == "sqlite":
            sa_event.listen(self.engine, "connect", _sqlite_pragmas)
        self._writer = Writer(self.engine, self.shown, lost_after())  # tries again, _writes.py
        self._transaction = self._writer.run
        self._create_schema()

    def _create_schema(self) -> None:
        try:
            migrate(self.engine)
        except sa.exc.SQLAlchemyError as exc:
            raise HistoryError(
                f"history store {self.shown!r} cannot be opened: {why(exc)}"
            ) from exc

    def close(self) -> None:
        self.engine.dispose()

    # --- writes --------------------------------------------------------------------------------

    def give_up(self) -> None:
        """From now on a write that the server does not answer fails at once instead of being
        tried again (safe in a signal handler; see ``_writes.py``)."""
        self._writer.give_up()

    def answering_since(self) -> float:
        """When (``time.monotonic``) the server last answered again after an outage; 0.0 if
        it has always answered."""
        return self._writer.answering_since

    def patiently(self, work: Callable[[], T]) -> T:
        """``work()`` (a call on this store's database by other means, such as Optuna's
        storage), called again while the server does not answer, as this store's writes are."""
        return self._writer.call(work)

    def _write(self, statement: Any) -> None:
        self._transaction(lambda conn: conn.execute(statement))

    def create_job(self, **fields: Any) -> None:
        fields.setdefault("created_at", time.time())
        self._write(jobs.insert().values(**fields))

    def update_job(self, job_id: str, **fields: Any) -> None:
        self._write(jobs.update().where(jobs.c.id == job_id).values(**fields))

    def upsert_task(self, job_id: str, task_id: str, attempt: int, **fields: Any) -> None:
        key = (tasks.c.job_id == job_id) & (tasks.c.task_id == task_id)
        key = key & (tasks.c.attempt == attempt)

        def upsert(conn: Any) -> None:
            found = conn.execute(sa.select(tasks.c.task_id).where(key)).first()
            if found is None:
                conn.execute(
                    tasks.insert().values(job_id=job_id, task_id=task_id, attempt=attempt, **fields)
                )
            else:
                conn.execute(tasks.update().where(key).values(**fields))

        self._transaction(upsert)

    def add_event(
        self,
        job_id: str,
        kind: str,
        *,
        task_id: str | None = None,
        attempt: int | None = None,
        data: Mapping[str, Any] | None = None,
        ts: float | None = None,
    ) -> None:
        self._write(
            events.insert().values(
                job_id=job_id,
                ts=time.time() if ts is None else ts,
                kind=kind,
                task_id=task_id,
                attempt=attempt,
                data=json.dumps(dict(data or {}), default=str),
            )
        )

    def add_metrics(self, job_id: str, rows: list[MetricRow]) -> None:
        """Many metric values in one transaction (the driver batches what tasks report). A value
        that is not finite (a diverging loss) is stored as NULL, with ``nan``, ``inf`` or
        ``-inf`` beside it, and read back as that float."""
        if not rows:
            return
        values = [
            {
                "job_id": job_id,
                "task_id": r.task_id,
                "attempt": r.attempt,
                "step": r.step,
                "ts": r.ts,
                "name": r.name,
                "value": r.value if math.isfinite(r.value) else None,
                "nonfinite": None if math.isfinite(r.value) else repr(r.value),
            }
            for r in rows
        ]
        self._transaction(lambda conn: conn.execute(metrics.insert(), values))

    # --- reads ---------------------------------------------------------------------------------

    def _rows(self, statement: Any) -> list[Any]:
        try:
            with self.engine.connect() as conn:
                return list(conn.execute(statement))
        except sa.exc.SQLAlchemyError as exc:
            raise HistoryError(f"history store read failed: {why(exc)}") from exc

    def list_jobs(
        self,
        limit: int = 50,
        kind: str | None = None,
        *,
        name: str | None = None,
        statuses: Sequence[str] = (),
        since: float | None = None,
    ) -> list[JobRow]:
        """The newest jobs first; only those of ``kind``, named ``name``, in one of
        ``statuses``, or created at ``since`` (a Unix time) or later, when given."""
        query = sa.select(jobs).order_by(jobs.c.created_at.desc()).limit(limit)
        if kind is not None:
            query = query.where(jobs.c.kind == kind)
        if name is not None:
            query = query.where(jobs.c.name == name)
        if statuses:
            query = query.where(jobs.c.status.in_(list(statuses)))
        if since is not None:
            query = query.where(jobs.c.created_at >= since)
        return [_job_row(row) for row in self._rows(query)]

    def get_job(self, job_id: str) -> JobRow:
        """The job of this id, or of a unique prefix of one."""
        return self.find_job(job_id, by_name=False)[0]

    def find_job(self, ref: str, *, by_name: bool = True) -> tuple[JobRow, int]:
        """The job ``ref`` names, and how many it could have meant: an id; else (``by_name``)
        the latest job of that name, with the number of jobs of that name; else a unique prefix
        of an id."""
        rows = self._rows(sa.select(jobs).where(jobs.c.id == ref))
        if rows:
            return _job_row(rows[0]), 1
        if by_name:
            named = jobs.c.name == ref
            rows = self._rows(sa.select(jobs).where(named).order_by(jobs.c.created_at.desc()))
            if rows:
                return _job_row(rows[0]), len(rows)
        # A unique prefix is enough, as with git; compared as it is (no LIKE: its wildcards and,
        # on SQLite, its case-blindness would match other ids).
        prefix = sa.func.substr(jobs.c.id, 1, len(ref)) == ref
        rows = self._rows(sa.select(jobs).where(prefix).order_by(jobs.c.id).limit(3))
        if len(rows) > 1:
            names = ", ".join(row.id for row in rows)
            raise HistoryError(f"job id {ref!r} is ambiguous: {names}")
        if not rows:
            what = "job (id, id prefix or name)" if by_name else "job"
            raise HistoryError(f"no {what} {ref!r} in {self.shown}; see 'cauce jobs'")
        return _job_row(rows[0]), 1

    def get_tasks(self, job_id: str) -> list[TaskRow]:
        query = (
            sa.select(tasks)
            .where(tasks.c.job_id == job_id)
            .order_by(tasks.c.attempt, tasks.c.started_at, tasks.c.task_id)
        )
        return [
            TaskRow(**{**row._mapping, "status": TaskStatus(row.status)})
            for row in self._rows(query)
        ]

    def get_metrics(self, job_id: str, task_id: str | None = None) -> list[MetricRow]:
        query = sa.select(
            metrics.c.task_id,
            metrics.c.attempt,
            metrics.c.step,
            metrics.c.ts,
            metrics.c.name,
            metrics.c.value,
            metrics.c.nonfinite,
        ).where(metrics.c.job_id == job_id)
        if task_id is not None:
            query = query.where(metrics.c.task_id == task_id)
        query = query.order_by(metrics.c.id)
        return [
            MetricRow(
                row.task_id,
                row.attempt,
                row.step,
                row.ts,
                row.name,
                row.value if row.nonfinite is None else _NONFINITE[row.nonfinite],
            )
            for row in self._rows(query)
        ]

    def get_events(self, job_id: str) -> list[EventRow]:
        query = sa.select(events).where(events.c.job_id == job_id).order_by(events.c.id)
        out = []
        for row in self._rows(query):
            values = dict(row._mapping)
            values["data"] = json.loads(values["data"] or "{}")
            out.append(EventRow(**values))
        return out


def _job_row(row: Any) -> JobRow:
    return JobRow(**{**row._mapping, "status": JobStatus(row.status)})
