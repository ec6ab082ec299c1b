"""The jobs list and a job's page (spec, placement, attempts, cause, events, logs, metrics)."""

from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from cauce.errors import HistoryError
from cauce.history import HistoryStore, JobRow, JobStatus
from cauce.ui._html import (
    e,
    fmt_seconds,
    fmt_time,
    json_script,
    link,
    page,
    pager,
    q,
    status_badge,
    table,
)
from cauce.ui._http import Request, Response, html_response, json_response, not_found
from cauce.ui._logs import TAIL, find_task, read_from, stream, tail
from cauce.ui._queries import duration, fresh_job, job_dict, jobs_page

__all__ = [
    "MAX_POINTS",
    "job_api",
    "job_page",
    "jobs_api",
    "jobs_list",
    "log_api",
    "log_file",
    "metrics_csv",
    "thin",
]

MAX_POINTS = 2000  # per series in a job's page; the CSV has them all
_CSV_ROWS = 2000  # rows per chunk of metrics.csv

_HEADERS = ("name", "status", "framework", "cluster", "started", "duration", "attempts", "restarts")


def _job_cells(job: JobRow, now: float) -> list[str]:
    return [
        link(f"/jobs/{q(job.id)}", job.name, title=job.id),
        status_badge(job.status),
        e(job.framework),
        e(job.cluster),
        e(fmt_time(job.started_at or job.created_at)),
        e(fmt_seconds(duration(job, now))),
        e(job.attempts),
        e(job.restarts),
    ]


def _filters(req: Request) -> dict[str, str]:
    status = req.arg("status")
    return {"status": status if status in set(JobStatus) else "", "q": req.arg("q")[:200]}


def jobs_list(store: HistoryStore, req: Request) -> Response:
    found = _filters(req)
    now = time.time()
    result = jobs_page(store, status=found["status"], name=found["q"], page=req.int_arg("page", 1))
    options = "".join(
        f'<option value="{e(s)}"{" selected" if s == found["status"] else ""}>{e(s or "any")}'
        "</option>"
        for s in ("", *JobStatus)
    )
    form = (
        '<form class="filters" method="get" action="/jobs">'
        f'<label>status <select name="status">{options}</select></label> '
        f'<label>name <input name="q" value="{e(found["q"])}"></label> '
        "<button>filter</button></form>"
    )
    body = (
        form
        + f'<p class="count" id="count">{result.total} jobs</p>'
        + table(
            _HEADERS,
            (_job_cells(job, now) for job in result.rows),
            tbody_id="jobs",
            cls="jobs",
        )
        + pager("/jobs", {"status": found["status"], "q": found["q"]}, result.page, result.pages)
    )
    return html_response(page("Jobs", body, script="jobs"))


def jobs_api(store: HistoryStore, req: Request) -> Response:
    found = _filters(req)
    now = time.time()
    result = jobs_page(store, status=found["status"], name=found["q"], page=req.int_arg("page", 1))
    return json_response(
        {
            "total": result.total,
            "page": result.page,
            "pages": result.pages,
            "jobs": [job_dict(job, now) for job in result.rows],
        }
    )


def _get_job(store: HistoryStore, job_id: str) -> JobRow:
    try:
        job = fresh_job(store, job_id)
    except HistoryError:
        raise not_found(f"no job {job_id}") from None
    if job.id != job_id:
        raise not_found(f"no job {job_id}")  # the page of a job is at its full id
    return job


def _tasks_table(store: HistoryStore, job: JobRow) -> str:
    rows = []
    for t in store.get_tasks(job.id):
        took = fmt_seconds(t.ended_at - t.started_at) if t.started_at and t.ended_at else "-"
        log = f"/jobs/{q(job.id)}/logs/{q(t.task_id)}/{t.attempt}"
        rows.append(
            [
                e(t.attempt + 1),
                e(t.task_id),
                e(t.host or "-"),
                e(t.port if t.port is not None else "-"),
                e(t.gpus or "-"),
                e(t.pid or "-"),
                status_badge(t.status),
                e("-" if t.exit_code is None else t.exit_code),
                e(took),
                link(log, "log") if t.log_path else "-",
            ]
        )
    headers = ("attempt", "task", "host", "port", "gpus", "pid", "status", "exit", "took", "log")
    return table(headers, rows, tbody_id="tasks", cls="tasks")


def _logs(store: HistoryStore, job: JobRow) -> str:
    """The last attempt's logs, a tail each (the page works without scripts)."""
    tasks = store.get_tasks(job.id)
    last = max((t.attempt for t in tasks), default=0)
    parts = []
    for t in tasks:
        if t.attempt != last or not t.log_path:
            continue
        text, end, cut = tail(t.log_path)
        base = f"/jobs/{q(job.id)}/logs/{q(t.task_id)}/{t.attempt}"
        parts.append(
            f'<section class="log"><h3>{e(t.task_id)} (attempt {t.attempt + 1}) '
            f"{link(base, 'whole file')}</h3>"
            + ("<p class=note>the start of the log is cut; see the whole file</p>" if cut else "")
            + f'<pre class="logtail" data-src="/api{e(base)}" data-offset="{end}">{e(text)}</pre>'
            "</section>"
        )
    return "".join(parts) or "<p>no logs</p>"


def _metrics(store: HistoryStore, job: JobRow) -> tuple[str, dict[str, Any]]:
    series: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for row in store.get_metrics(job.id):
        label = row.task_id if not row.attempt else f"{row.task_id} #{row.attempt + 1}"
        series[row.name][label].append([row.step, row.value])
    if not series:
        return "<p>no metrics reported</p>", {}
    data = {
        name: [{"name": k, "points": thin(v)} for k, v in by.items()] for name, by in series.items()
    }
    charts = "".join(
        f'<figure class="chart" data-metric="{e(name)}"><figcaption>{e(name)}</figcaption></figure>'
        for name in data
    )
    csv_link = link(f"/jobs/{q(job.id)}/metrics.csv", "download CSV")
    return f'<p>{csv_link}</p><div class="charts" id="metric-charts">{charts}</div>', data


def thin(points: list[list[float]], most: int = MAX_POINTS) -> list[list[float]]:
    """At most ``most`` of ``points``, evenly spread, the first and the last kept."""
    n = len(points)
    if n <= most:
        return points
    return [points[round(i * (n - 1) / (most - 1))] for i in range(most)]


def _events(store: HistoryStore, job: JobRow) -> str:
    events = store.get_events(job.id)
    if not events:
        return "<p>no events</p>"
    start = events[0].ts
    rows = []
    for ev in events:
        detail = ", ".join(f"{k}={v}" for k, v in ev.data.items() if k != "cause")
        rows.append(
            [
                e(f"+{ev.ts - start:.2f} s"),
                e(ev.kind),
                e(ev.task_id or ""),
                e(detail[:300]),
            ]
        )
    return '<div class="timeline">' + table(("at", "event", "task", "detail"), rows) + "</div>"


def job_page(store: HistoryStore, req: Request, job_id: str) -> Response:
    job = _get_job(store, job_id)
    now = time.time()
    cause = ""
    if job.root_cause:
        cause = (
            '<div class="cause" id="root-cause"><h2>Root cause</h2>'
            f"<pre>{e(job.root_cause)}</pre></div>"
        )
    facts = [
        ("id", e(job.id)),
        ("status", f'<span id="job-status">{status_badge(job.status)}</span>'),
        ("framework", e(job.framework)),
        ("cluster", e(f"{job.cluster} (driver pid {job.driver_pid} on {job.host})")),
        ("spec file", e(job.source or "(given in code)")),
        ("run folder", e(job.run_dir)),
        ("created", e(fmt_time(job.created_at))),
        ("duration", e(fmt_seconds(duration(job, now)))),
        ("attempts", e(f"{job.attempts} (restarts: {job.restarts})")),
    ]
    dl = "<dl class=facts>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
    charts, data = _metrics(store, job)
    body = (
        cause
        + dl
        + "<h2>Tasks</h2>"
        + _tasks_table(store, job)
        + "<h2>Metrics</h2>"
        + charts
        + json_script("metrics-data", data)
        + "<h2>Logs</h2>"
        + _logs(store, job)
        + "<h2>Events</h2>"
        + _events(store, job)
        + "<h2>Spec</h2>"
        + f"<pre class=spec>{e(job.spec or '(none recorded)')}</pre>"
    )
    return html_response(page(f"Job {job.name}", body, script="job"))


def job_api(store: HistoryStore, req: Request, job_id: str) -> Response:
    job = _get_job(store, job_id)
    tasks = [
        {"task": t.task_id, "attempt": t.attempt, "status": str(t.status), "exit": t.exit_code}
        for t in store.get_tasks(job.id)
    ]
    return json_response(
        {
            "id": job.id,
            "status": str(job.status),
            "active": job.status.active,
            "root_cause": job.root_cause,
            "tasks": tasks,
        }
    )


def _log_path(store: HistoryStore, job_id: str, task_id: str, attempt: str) -> tuple[str, bool]:
    job = _get_job(store, job_id)
    if not (attempt.isascii() and attempt.isdigit()):
        raise not_found()
    task = find_task(store, job.id, task_id, int(attempt))
    if task is None or not task.log_path:
        raise not_found(f"no log of task {task_id} attempt {attempt}")
    return task.log_path, job.status.active


def log_api(store: HistoryStore, req: Request, job_id: str, task_id: str, attempt: str) -> Response:
    """The log from ``offset`` (a chunk), for the tail that follows a running task."""
    path, active = _log_path(store, job_id, task_id, attempt)
    offset = req.int_arg("offset", -1)
    if offset < 0:
        text, end, _ = tail(path, TAIL)
    else:
        text, end = read_from(path, offset)
    return json_response({"text": text, "offset": end, "active": active})


def log_file(
    store: HistoryStore, req: Request, job_id: str, task_id: str, attempt: str
) -> Response:
    """The whole log, streamed in chunks."""
    path, _ = _log_path(store, job_id, task_id, attempt)
    try:
        chunks = stream(path)
        first = next(chunks, b"")
    except OSError:
        raise not_found("the log file is gone") from None

    def body() -> Any:
        yield first
        yield from chunks

    return Response(200, "text/plain; charset=utf-8", body())


def metrics_csv(store: HistoryStore, req: Request, job_id: str) -> Response:
    job = _get_job(store, job_id)
    rows = store.get_metrics(job.id)

    def chunks() -> Iterator[bytes]:  # sent chunked: never the whole CSV in memory
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["task", "attempt", "step", "time", "metric", "value"])
        for i, r in enumerate(rows, 1):
            writer.writerow([r.task_id, r.attempt, r.step, f"{r.ts:.3f}", r.name, repr(r.value)])
            if i % _CSV_ROWS == 0:
                yield out.getvalue().encode()
                out.seek(0)
                out.truncate()
        yield out.getvalue().encode()

    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in job.id)
    return Response(
        200,
        "text/csv; charset=utf-8",
        chunks(),
        {"Content-Disposition": f'attachment; filename="{name}-metrics.csv"'},
    )
