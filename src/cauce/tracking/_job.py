"""A job as an MLflow run: what the driver tells it, turned into operations of a tracker.

Params: the job's params (a trial's values) as they are, and the resolved spec flattened under
``spec.`` (``spec.roles.0.instances``; of ``env`` sections the names only, values may be
secrets). Metrics: every ``cauce.report``, with its step and time,
in one batch per read of the progress files (about once a second); the first task's under their
own names, other tasks' as ``TASK/NAME``. Tags: ``cauce.job_id``, ``cauce.kind``,
``cauce.cluster`` at the start; ``cauce.status``, ``cauce.attempts``, ``cauce.restarts`` and
``cauce.root_cause`` at the end. The tasks' logs go up as artifacts under ``logs/``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cauce.history import MetricRow
from cauce.spec import JobSpec
from cauce.tracking._sync import SPOOL_FILE
from cauce.tracking._tracker import Tracker, open_tracker
from cauce.tracking.api import RunLink

__all__ = ["JobTracking", "open_job_tracking"]

#: A job's status as the run's: a pruned trial (stopped early by the tuner) is KILLED, not FAILED.
_STATUS = {"succeeded": "FINISHED", "failed": "FAILED", "killed": "KILLED", "pruned": "KILLED"}


def flatten(value: Any, prefix: str) -> Iterator[tuple[str, str]]:
    """``(dotted key, text)`` of every leaf of a spec's data; None and () are left out."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    pairs = isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 for v in value)
    if pairs and value and prefix.endswith(".env"):  # names only: values may be secrets
        yield prefix, " ".join(str(name) for name, _ in value)
    elif pairs and value:  # (key, value) pairs, as spark settings: a mapping
        yield from flatten(dict(value), prefix)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)) and any(
        isinstance(v, (Mapping, list, tuple)) or dataclasses.is_dataclass(v) for v in value
    ):
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}.{index}")
    elif value is not None and value != ():
        many = isinstance(value, (list, tuple))
        yield prefix, " ".join(str(v) for v in value) if many else str(value)


class JobTracking:
    """The MLflow run of one job. ``close`` is its opener's to call, once the job ended."""

    def __init__(self, tracker: Tracker, first_task: str = "") -> None:
        self.tracker = tracker
        self.first_task = first_task

    def started(
        self, spec: JobSpec, params: Mapping[str, object], *, cluster: str, first_task: str
    ) -> None:
        self.first_task = first_task
        values: dict[str, object] = dict(params)
        values.update(flatten(spec, "spec"))
        self.tracker.log(params=values, tags={"cauce.cluster": cluster})

    def metrics(self, rows: Iterable[MetricRow]) -> None:
        first = self.first_task
        self.tracker.log(
            (
                r.name if r.task_id == first else f"{r.task_id}/{r.name}",
                r.value,
                int(r.ts * 1000),
                r.step,
            )
            for r in rows
        )

    def finished(
        self, status: str, root_cause: str, *, attempts: int, restarts: int, log_dir: Path
    ) -> None:
        tags: dict[str, object] = {"cauce.status": status, "cauce.attempts": attempts}
        tags["cauce.restarts"] = restarts
        if root_cause:
            tags["cauce.root_cause"] = root_cause
        self.tracker.log(tags=tags)
        self.tracker.end(_STATUS.get(status, "FAILED"))  # before the logs: they may be slow
        if log_dir.is_dir() and any(log_dir.iterdir()):
            self.tracker.artifacts(str(log_dir), "logs")

    def close(self, timeout: float = 20.0) -> None:
        self.tracker.close(timeout)


def open_job_tracking(
    spec: JobSpec,
    environ: Mapping[str, str],
    run_dir: Path,
    job_id: str,
    *,
    kind: str,
    warn: Callable[[str], None],
    parent: RunLink | None = None,
    tags: Mapping[str, str] | None = None,
) -> JobTracking | None:
    """The run of a job, under ``parent`` (a study's or a pipeline's run, whose target it
    takes) or where the spec and environment say; None when tracking is off."""
    tracker = open_tracker(
        spec.tracking,
        environ,
        spec.name,
        run_dir / SPOOL_FILE,
        parent=parent,
        name=job_id,
        tags={"cauce.job_id": job_id, "cauce.kind": kind, **(tags or {})},
        warn=warn,
        hint=f": cauce mlflow sync {job_id}",
    )
    return JobTracking(tracker) if tracker is not None else None
