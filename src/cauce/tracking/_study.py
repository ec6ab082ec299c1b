"""A study as an MLflow parent run, with one child run per trial.

The study's run is found again by its ``cauce.study`` tag when a study continues (a tuner
stopped and started again): one parent run per study, whatever the number of tuners. Each
trial's job is a child run (its driver sends params, metrics and logs, as any job's), tagged at
its end with the trial's number, state (complete, pruned, failed), value and pruned step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from cauce.spec import JobSpec
from cauce.tracking._job import JobTracking, open_job_tracking
from cauce.tracking._sync import SPOOL_FILE
from cauce.tracking._tracker import Tracker, open_tracker
from cauce.tracking.api import RunLink

__all__ = ["StudyTracking", "open_study_tracking"]


class StudyTracking:
    """The parent run of one study. Opened and closed by the tuner; ``trial`` and
    ``trial_ended`` from the tuner's thread."""

    def __init__(self, tracker: Tracker, warn: Callable[[str], None]) -> None:
        self.tracker = tracker
        self.warn = warn
        self._link: RunLink | None = None

    def link(self) -> RunLink:
        if self._link is None:
            self._link = RunLink(self.tracker.target, self.tracker.wait_created())
        return self._link

    def trial(self, spec: JobSpec, run_dir: Path, job_id: str, number: int) -> JobTracking:
        """The child run of trial ``number`` (its driver is ``job_id``), for the driver."""
        tracking = open_job_tracking(
            spec,
            {},
            run_dir,
            job_id,
            kind="trial",
            warn=self.warn,
            parent=self.link(),
            tags={"cauce.trial.number": str(number)},
        )
        assert tracking is not None  # a parent gives the target
        return tracking

    def trial_ended(
        self,
        tracking: JobTracking,
        state: str,
        *,
        value: float | None = None,
        pruned_step: int | None = None,
    ) -> None:
        tags: dict[str, object] = {"cauce.trial.state": state}
        if value is not None:
            tags["cauce.trial.value"] = value
        if pruned_step is not None:
            tags["cauce.trial.pruned_step"] = pruned_step
        tracking.tracker.log(tags=tags)
        tracking.close()

    def close(self, status: str, best: Mapping[str, object] | None = None) -> None:
        """End the study's run: ``status`` of the study (complete, failed, interrupted)."""
        tags: dict[str, object] = {"cauce.study.status": status}
        tags.update({f"cauce.best.{k}": v for k, v in (best or {}).items()})
        self.tracker.log(tags=tags)
        ended = {"complete": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.tracker.end(ended)
        self.tracker.close()


def open_study_tracking(
    spec: JobSpec,
    environ: Mapping[str, str],
    folder: Path,
    study: str,
    *,
    warn: Callable[[str], None],
    parent: RunLink | None = None,
) -> StudyTracking | None:
    """The study's run (spooled in ``folder``), under ``parent`` (a pipeline's run) or where
    the spec and the environment say; None when tracking is off."""
    tracker = open_tracker(
        spec.tracking,
        environ,
        spec.name,
        folder / SPOOL_FILE,
        parent=parent,
        name=study,
        tags={"cauce.study": study, "cauce.kind": "study"},
        warn=warn,
        hint=f": cauce mlflow sync {folder / SPOOL_FILE}",
        reuse=("cauce.study", study),
    )
    return StudyTracking(tracker, warn) if tracker is not None else None
