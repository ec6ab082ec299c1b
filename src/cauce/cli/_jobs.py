"""``cauce jobs``, ``show``, ``logs`` and ``kill``: reading and steering the history store."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cauce.cli._format import FORMATS, emit, job_json, metric_json, show_json
from cauce.cli._options import env_option
from cauce.cli._select import JOB_REF, STATUSES, find_job, since_time, statuses_of
from cauce.errors import HistoryError, SpecError
from cauce.history import HistoryStore, JobRow, open_store
from cauce.history import driver_alive as _driver_alive
from cauce.history import refresh_job as _refresh
from cauce.spec import parse_duration

__all__ = ["register"]


_MAX_LIMIT = 1_000_000  # rows `cauce jobs` lists at most (a bigger number is a typo)


def register(sub: Any) -> None:
    history = argparse.ArgumentParser(add_help=False)
    env_option(
        history, "--history", env="CAUCE_HISTORY", help="SQLAlchemy URL of the history store"
    )
    jobs = sub.add_parser("jobs", parents=[history], help="list recent jobs, newest first")
    jobs.add_argument("--limit", type=int, default=20, help="how many at most (default 20)")
    jobs.add_argument("--name", help="only the jobs of this name")
    jobs.add_argument(
        "--status",
        action="append",
        default=[],
        help=f"only jobs in this status (repeatable, or comma-separated): {STATUSES}",
    )
    jobs.add_argument(
        "--since",
        help="only jobs started in the last DURATION (90s, 10m, 1h, 2d) or since a date or "
        "time (2026-11-30, '2026-11-30 14:00')",
    )
    jobs.add_argument("--format", choices=FORMATS, default="table", help="output format")
    jobs.set_defaults(func=cmd_jobs)

    show = sub.add_parser(
        "show",
        parents=[history],
        help="a job's tasks, attempts, cause and model lineage; or a model folder's lineage",
    )
    show.add_argument("job_id", help=f"{JOB_REF}; or a model folder (cauce-model.json)")
    show.add_argument("--format", choices=FORMATS, default="table", help="output format")
    show.set_defaults(func=cmd_show)

    logs = sub.add_parser("logs", parents=[history], help="a job's task logs")
    logs.add_argument("job_id", help=JOB_REF)
    logs.add_argument("--task", help="only this task, e.g. worker-1")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing until the job ends"
    )
    logs.set_defaults(func=cmd_logs)

    metrics = sub.add_parser("metrics", parents=[history], help="a job's reported metrics")
    metrics.add_argument("job_id", help=JOB_REF)
    metrics.add_argument("--task", help="only this task, e.g. worker-0")
    metrics.add_argument("--name", action="append", help="only this metric (repeatable)")
    metrics.add_argument(
        "--format", choices=("table", "csv", "json"), default="table", help="output format"
    )
    metrics.set_defaults(func=cmd_metrics)

    kill = sub.add_parser("kill", parents=[history], help="stop a running job")
    kill.add_argument("job_id", help=JOB_REF)
    kill.add_argument(
        "--wait",
        default="30",
        help="how long to wait for it to stop: 30, 30s, 2m (default 30 seconds)",
    )
    kill.set_defaults(func=cmd_kill)


def _duration(job: JobRow) -> str:
    if job.started_at is None:
        return "-"
    end = job.ended_at or time.time()
    seconds = end - job.started_at
    if seconds < 120:
        return f"{seconds:.1f}s"
    return f"{seconds / 60:.1f}m"


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def cmd_jobs(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= _MAX_LIMIT:
        raise SpecError("--limit", f"must be between 1 and {_MAX_LIMIT:,}, got {args.limit}")
    statuses, since = statuses_of(args.status), since_time(args.since)
    store = open_store(args.history)
    found = store.list_jobs(limit=args.limit, name=args.name, statuses=statuses, since=since)
    if args.format == "json":
        return emit([job_json(_refresh(store, j)) for j in found])
    rows = [["ID", "NAME", "STATUS", "ATTEMPTS", "STARTED", "DURATION"]]
    for job in found:
        job = _refresh(store, job)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.created_at))
        rows.append([job.id, job.name, job.status, str(job.attempts), started, _duration(job)])
    if len(rows) == 1:
        filtered = args.name or statuses or since is not None
        sys.stdout.write(f"no {'such jobs' if filtered else 'jobs yet'} in {store.shown}\n")
    else:
        sys.stdout.write(table(rows) + "\n")
    return 0


def _flatten(value: object, prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON as ``a.b.c`` keys and one-line values, in order."""
    import json

    if isinstance(value, dict) and value:
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += _flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, float):
        return [(prefix, f"{value:.6g}")]
    return [(prefix, value if isinstance(value, str) else json.dumps(value))]


def show_model(folder: Path, out: Any) -> None:
    """A model folder's name, version, tensors and lineage (where it came from)."""
    from cauce.serve import read_spec

    spec = read_spec(folder, verify_hash=False)
    out.write(f"model:     {folder} ({spec.name} version {spec.version}, {spec.created_at})\n")
    for heading, tensors in (("inputs: ", spec.inputs), ("outputs:", spec.outputs)):
        if tensors:  # never a heading with nothing under it
            listed = ", ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in tensors)
            out.write(f"{heading}   {listed}\n")
    rows = _flatten(dict(spec.lineage))
    if rows:
        width = max(len(k) for k, _ in rows)
        out.write("lineage:\n")
        for key, value in rows:
            out.write(f"  {key:<{width}}  {value}\n")


def _models_of(run_dir: str) -> list[Path]:
    from cauce.serve import SPEC_FILE

    root = Path(run_dir)
    return sorted(p.parent for p in root.glob(f"*/{SPEC_FILE}")) if root.is_dir() else []


def cmd_show(args: argparse.Namespace) -> int:
    from cauce.serve import SPEC_FILE

    if (Path(args.job_id) / SPEC_FILE).is_file():
        show_model(Path(args.job_id), sys.stdout)
        return 0
    store = open_store(args.history)
    job = _refresh(store, find_job(store, args.job_id))
    if args.format == "json":
        return emit(show_json(store, job, _models_of(job.run_dir)))
    out = sys.stdout
    out.write(f"job:       {job.id}\n")
    out.write(f"name:      {job.name} ({job.framework})\n")
    out.write(f"status:    {job.status}\n")
    out.write(f"cluster:   {job.cluster} (driver pid {job.driver_pid} on {job.host})\n")
    out.write(f"spec:      {job.source or '(given in code)'}\n")
    out.write(f"run dir:   {job.run_dir}\n")
    out.write(f"attempts:  {job.attempts} (restarts: {job.restarts})\n")
    out.write(f"duration:  {_duration(job)}\n")
    if job.root_cause:
        out.write(f"cause:     {job.root_cause}\n")
    tasks = store.get_tasks(job.id)
    if tasks:
        rows = [["TASK", "ATTEMPT", "PID", "GPUS", "STATUS", "EXIT", "DURATION"]]
        for task in tasks:
            took = "-"
            if task.started_at and task.ended_at:
                took = f"{task.ended_at - task.started_at:.1f}s"
            exit_code = "-" if task.exit_code is None else str(task.exit_code)
            rows.append(
                [
                    task.task_id,
                    str(task.attempt + 1),
                    str(task.pid or "-"),
                    task.gpus or "-",
                    task.status,
                    exit_code,
                    took,
                ]
            )
        out.write("\n" + table(rows) + "\n")
    latest: dict[tuple[str, str], tuple[int, float]] = {}
    for row in store.get_metrics(job.id):
        latest[(row.task_id, row.name)] = (row.step, row.value)
    if latest:
        rows = [["TASK", "METRIC", "STEP", "LAST VALUE"]]
        for (task_id, name), (step, value) in sorted(latest.items()):
            rows.append([task_id, name, str(step), f"{value:.6g}"])
        out.write("\n" + table(rows) + "\n")
    restarts = [e for e in store.get_events(job.id) if e.kind == "restart"]
    for event in restarts:
        when = time.strftime("%H:%M:%S", time.localtime(event.ts))
        first = str(event.data.get("cause", "")).splitlines()[:1]
        out.write(f"\nrestart {event.data.get('restart')} at {when}: {''.join(first)}")
    if restarts:
        out.write("\n")
    for model in _models_of(job.run_dir):
        out.write("\n")
        show_model(model, out)
    from cauce.ui import portal_hint

    out.write("\n" + portal_hint("jobs", job.id) + "\n")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    store = open_store(args.history)
    job = find_job(store, args.job_id)
    rows = store.get_metrics(job.id, args.task)
    if args.task is not None and not rows:
        tasks = sorted(row.task_id for row in store.get_tasks(job.id))
        if args.task not in tasks:
            known = ", ".join(tasks) or "none yet"
            raise HistoryError(f"job {job.id} has no task {args.task!r}; its tasks: {known}")
    if args.name:
        names = {row.name for row in rows}
        rows = [row for row in rows if row.name in args.name]
        if names and not rows:
            raise HistoryError(
                f"job {job.id} has no metric {', '.join(map(repr, args.name))}; "
                f"its metrics: {', '.join(sorted(names))}"
            )
    out = sys.stdout
    if args.format == "json":
        return emit([metric_json(row) for row in rows])
    if args.format == "csv":
        out.write("task,attempt,step,time,name,value\n")
        for row in rows:
            out.write(
                f"{row.task_id},{row.attempt + 1},{row.step},{row.ts:.3f},{row.name},"
                f"{row.value!r}\n"
            )
        return 0
    if not rows:
        out.write(f"job {job.id} has no metrics (tasks report them with cauce.report)\n")
        return 0
    lines = [["TASK", "ATTEMPT", "STEP", "METRIC", "VALUE"]]
    for row in rows:
        lines.append(
            [row.task_id, str(row.attempt + 1), str(row.step), row.name, f"{row.value:.6g}"]
        )
    out.write(table(lines) + "\n")
    return 0


def _log_files(store: HistoryStore, job: JobRow, task: str | None) -> dict[str, str]:
    files: dict[str, str] = {}
    for row in store.get_tasks(job.id):
        files[row.task_id] = row.log_path
    if task is not None:
        if task not in files:
            known = ", ".join(sorted(files)) or "none yet"
            raise HistoryError(f"job {job.id} has no task {task!r}; its tasks: {known}")
        return {task: files[task]}
    return files


def cmd_logs(args: argparse.Namespace) -> int:
    store = open_store(args.history)
    job = find_job(store, args.job_id)
    files = _log_files(store, job, args.task)
    prefix = len(files) > 1
    offsets: dict[str, int] = dict.fromkeys(files, 0)
    pending: dict[str, bytes] = dict.fromkeys(files, b"")
    while True:
        for task_id, path in files.items():
            try:
                with open(path, "rb") as file:
                    file.seek(offsets[task_id])
                    data = file.read()
            except FileNotFoundError:
                continue
            offsets[task_id] += len(data)
            data = pending[task_id] + data
            *lines, pending[task_id] = data.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", errors="replace")
                sys.stdout.write(f"[{task_id}] {line}\n" if prefix else f"{line}\n")
        sys.stdout.flush()
        if not args.follow:
            break
        job = _refresh(store, store.get_job(job.id))
        if not job.status.active:
            args.follow = False  # one more pass for the last lines
            continue
        files = _log_files(store, job, args.task)
        for task_id in files:
            offsets.setdefault(task_id, 0)
            pending.setdefault(task_id, b"")
        time.sleep(0.5)
    for task_id, rest in pending.items():
        if rest:
            line = rest.decode("utf-8", errors="replace")
            sys.stdout.write(f"[{task_id}] {line}\n" if prefix else f"{line}\n")
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    wait = parse_duration(args.wait, "--wait")
    store = open_store(args.history)
    job = find_job(store, args.job_id)
    if not job.status.active:
        sys.stdout.write(f"job {job.id} is not running ({job.status})\n")
        return 0
    alive = _driver_alive(job)
    if alive is None:
        raise HistoryError(f"job {job.id} is driven from host {job.host}; run 'cauce kill' there")
    if alive and job.driver_pid is not None:
        os.kill(job.driver_pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            job = store.get_job(job.id)
            if not job.status.active:
                sys.stdout.write(f"job {job.id} {job.status}\n")
                return 0
            time.sleep(0.2)
        raise HistoryError(f"job {job.id} did not stop within {wait:g} s")
    # The driver is gone (killed with SIGKILL, say); its reaper stopped the tasks.
    _refresh(store, job)
    sys.stdout.write(f"job {job.id}: its driver was already gone; marked lost\n")
    return 0
