"""``--format json``: what ``jobs``, ``show``, ``metrics``, ``trials`` and ``run`` print for
scripts, in one shape (documented in docs/scripting.md, JSON Schemas in docs/schemas/).

The rules, the same for every command: one JSON document on stdout (an array for a list, an
object for one thing), keys in ``snake_case``, times as Unix seconds (floats), durations as
``*_s`` seconds, absent values as ``null`` (never left out), non-finite numbers (a metric of NaN
or infinity) as ``null`` too, and attempts numbered from 1, as the tables show them
(``attempt: 1`` is the first run of a task, ``2`` its first restart).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from cauce.history import HistoryStore, JobRow, MetricRow, TaskRow

__all__ = [
    "FORMATS",
    "emit",
    "job_json",
    "metric_json",
    "pipeline_json",
    "result_json",
    "show_json",
    "task_json",
]

#: The choices of ``--format`` on commands that print tables.
FORMATS = ("table", "json")


def emit(doc: object, out: IO[str] | None = None) -> int:
    """Write ``doc`` as indented JSON and a newline; returns 0 (the command's exit code)."""
    stream = out or sys.stdout
    stream.write(json.dumps(_finite(doc), indent=2, default=str, allow_nan=False) + "\n")
    return 0


def _finite(doc: object) -> object:
    """``doc`` with NaN and infinities as None: JSON has no such numbers (``null`` instead)."""
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, Mapping):
        return {key: _finite(value) for key, value in doc.items()}
    if isinstance(doc, list | tuple):
        return [_finite(value) for value in doc]
    return doc


def _duration(started: float | None, ended: float | None) -> float | None:
    if started is None:
        return None
    return round((ended or time.time()) - started, 3)


def job_json(job: JobRow) -> dict[str, Any]:
    return {
        "id": job.id,
        "name": job.name,
        "kind": job.kind,
        "framework": job.framework,
        "status": str(job.status),
        "cluster": job.cluster,
        "host": job.host,
        "driver_pid": job.driver_pid,
        "spec": job.source or None,
        "run_dir": job.run_dir,
        "attempts": job.attempts,
        "restarts": job.restarts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "duration_s": _duration(job.started_at, job.ended_at),
        "root_cause": job.root_cause,
        "seen_at": job.seen_at,  # the driver's last heartbeat, by its host's clock
    }


def task_json(task: TaskRow) -> dict[str, Any]:
    return {
        "task": task.task_id,
        "attempt": task.attempt + 1,
        "role": task.role,
        "host": task.host,
        "pid": task.pid,
        "gpus": task.gpus or None,
        "status": str(task.status),
        "exit_code": task.exit_code,
        "started_at": task.started_at,
        "ended_at": task.ended_at,
        "duration_s": _duration(task.started_at, task.ended_at) if task.ended_at else None,
        "log": task.log_path,
    }


def metric_json(row: MetricRow) -> dict[str, Any]:
    return {
        "task": row.task_id,
        "attempt": row.attempt + 1,
        "step": row.step,
        "time": row.ts,
        "name": row.name,
        "value": row.value,
    }


def show_json(store: HistoryStore, job: JobRow, models: list[Path]) -> dict[str, Any]:
    """``cauce show JOB --format json``: the job, its tasks of every attempt, the last value
    of each metric of each task, its restarts and the model folders of its run."""
    latest: dict[tuple[str, str], MetricRow] = {}
    for row in store.get_metrics(job.id):
        latest[(row.task_id, row.name)] = row
    restarts = [
        {
            "restart": event.data.get("restart"),
            "time": event.ts,
            "cause": event.data.get("cause"),
        }
        for event in store.get_events(job.id)
        if event.kind == "restart"
    ]
    return {
        **job_json(job),
        "tasks": [task_json(t) for t in store.get_tasks(job.id)],
        "metrics": [metric_json(row) for _, row in sorted(latest.items())],
        "restart_events": restarts,
        "models": [str(m) for m in models],
    }


def result_json(result: Any) -> dict[str, Any]:
    """``cauce run JOB --format json``: how the job ended (a :class:`cauce.JobResult`)."""
    return {
        "id": result.job_id,
        "status": str(result.status),
        "ok": result.ok,
        "attempts": result.attempts,
        "restarts": result.restarts,
        "run_dir": result.run_dir,
        "root_cause": result.root_cause or None,
    }


def _plain(value: object) -> object:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def pipeline_json(result: Any) -> dict[str, Any]:
    """``cauce run PIPELINE --format json``: each step, whether it ran, and its result (what
    later steps can refer to: outputs, metrics, job ids)."""
    return {
        "pipeline": result.name,
        "home": result.home,
        "duration_s": round(result.seconds, 3),
        "steps": [
            {
                "name": step.name,
                "kind": step.kind,
                "status": step.status,
                "duration_s": round(step.seconds, 3),
                "result": _plain(step.result),
            }
            for step in result.steps
        ],
    }
