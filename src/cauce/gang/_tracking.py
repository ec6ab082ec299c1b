"""The driver's MLflow run (``cauce.tracking``): the one its caller opened, or one the driver
opens itself when the spec or the environment asks for tracking, and then closes."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from cauce.cluster.api import Cluster, GangRequest
from cauce.gang._console import Console
from cauce.history import MetricRow
from cauce.spec import JobSpec
from cauce.tracking import JobTracking, RunLink, open_job_tracking, without_tracking_env

__all__ = ["DriverTracking", "JobTracking", "RunLink", "without_tracking_env"]


class _Driver(Protocol):  # what of the JobDriver this reads
    spec: JobSpec
    environ: dict[str, str]
    run_dir: Path
    job_id: str
    kind: str
    params: dict[str, object]
    console: Console
    cluster: Cluster
    request: GangRequest


class DriverTracking:
    """The driver's MLflow run: ``given`` a :class:`JobTracking` its caller opened (and
    closes), or a :class:`RunLink` to open one under (a pipeline's run), or None to open one
    when the spec or the environment asks for tracking. The driver closes what it opened."""

    def __init__(self, given: JobTracking | RunLink | None) -> None:
        self.run = given if isinstance(given, JobTracking) else None
        self.parent = given if isinstance(given, RunLink) else None
        self.owned = False
        self.job_id = ""

    def open(self, driver: _Driver) -> None:
        """Before the job is recorded: a missing mlflow is an error before anything ran."""
        self.job_id = driver.job_id
        if self.run is None:
            self.run = open_job_tracking(
                driver.spec,
                driver.environ,
                driver.run_dir,
                driver.job_id,
                kind=driver.kind,
                warn=driver.console.status,
                parent=self.parent,
            )
            self.owned = self.run is not None
        if self.run is not None:
            self.run.started(
                driver.spec,
                driver.params,
                cluster=driver.cluster.name,
                first_task=driver.request.tasks[0].task_id,
            )

    def metrics(self, rows: list[MetricRow]) -> None:
        if self.run is not None:
            self.run.metrics(rows)

    def finished(
        self, status: str, cause: str, attempts: int, restarts: int, log_dir: Path
    ) -> None:
        if self.run is not None:
            self.run.finished(status, cause, attempts=attempts, restarts=restarts, log_dir=log_dir)

    def close(self, console: Console) -> None:
        """Close a run the driver opened, saying so when some of it was not sent."""
        if self.run is None or not self.owned:
            return
        self.run.close()
        tracker = self.run.tracker
        if tracker.failures:
            console.status(
                f"MLflow: {tracker.failures} of {tracker.sent + tracker.failures} operations "
                f"not sent, kept in {tracker.spool} (cauce mlflow sync {self.job_id})"
            )
