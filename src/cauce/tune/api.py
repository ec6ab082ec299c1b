"""Hyperparameter search: a study of trials, each trial a gang of its own.

    result = cauce.tune.tune("job.yaml", trials=32, parallel=4)
    result.best.params, result.best.value

A study lives in the history database (Optuna's RDB storage, same SQLAlchemy URL as the history
store), so a study that was stopped, even with ``kill -9``, continues where it was when started
again. See ``docs/tuning.md``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "TRIAL_STATES",
    "StudyInfo",
    "StudyProgress",
    "StudyResult",
    "TrialInfo",
    "TuneConsole",
    "studies",
    "trials",
    "tune",
]

#: States a trial is shown in: ``queued`` (to be retried), ``waiting`` (for resources),
#: ``running``, ``complete``, ``pruned``, ``failed``.
TRIAL_STATES = ("queued", "waiting", "running", "complete", "pruned", "failed")


@dataclass(frozen=True)
class TrialInfo:
    """One trial as people see it. ``value`` is the objective: the final one of a complete
    trial, the last reported one of a running or pruned trial."""

    number: int
    state: str
    params: Mapping[str, Any]
    value: float | None = None
    step: int | None = None
    job_id: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    #: Why it failed (the root cause), where it was pruned, what it waits for.
    note: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("complete", "pruned", "failed")


@dataclass(frozen=True)
class StudyProgress:
    """A snapshot of a study while ``tune`` runs it."""

    study: str
    metric: str
    direction: str
    target: int
    parallel: int
    trials: tuple[TrialInfo, ...]
    #: Failed trials in this run of ``tune``, and how many it tolerates.
    failures: int = 0
    max_failures: int = 0

    def count(self, *states: str) -> int:
        return sum(1 for trial in self.trials if trial.state in states)

    @property
    def done(self) -> int:
        """Trials that count towards the target: complete and pruned."""
        return self.count("complete", "pruned")

    @property
    def best(self) -> TrialInfo | None:
        return best_trial(self.trials, self.direction)


@dataclass(frozen=True)
class StudyResult:
    """How a run of ``tune`` ended. ``status`` is ``complete`` (the target was reached),
    ``failed`` (more than ``max_failures`` trials failed) or ``interrupted``."""

    study: str
    status: str
    reason: str
    metric: str
    direction: str
    trials: tuple[TrialInfo, ...]
    storage: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    @property
    def best(self) -> TrialInfo | None:
        return best_trial(self.trials, self.direction)


@dataclass(frozen=True)
class StudyInfo:
    name: str
    metric: str
    direction: str
    job: str
    counts: Mapping[str, int] = field(default_factory=dict)
    best: TrialInfo | None = None


class TuneConsole(Protocol):
    """Where ``tune`` tells people how the study goes. Called from the tuner's thread only."""

    def started(self, progress: StudyProgress, note: str) -> None: ...

    def changed(self, trial: TrialInfo, progress: StudyProgress) -> None: ...

    def tick(self, progress: StudyProgress) -> None: ...

    def finished(self, result: StudyResult) -> None: ...


def best_trial(trials: tuple[TrialInfo, ...], direction: str) -> TrialInfo | None:
    done = [t for t in trials if t.state == "complete" and t.value is not None]
    if not done:
        return None
    sign = 1.0 if direction == "min" else -1.0
    # The better value first; among equals, the earlier trial.
    return min(done, key=lambda t: (sign * (t.value or 0.0), t.number))


def tune(
    job: Any,
    *,
    trials: int | None = None,
    parallel: int | None = None,
    study: str | None = None,
    cluster: str | None = None,
    history: str | None = None,
    home: str | os.PathLike[str] | None = None,
    console: TuneConsole | None = None,
    poll_interval: float = 0.25,
) -> StudyResult:
    """Run the study of a job (a :class:`~cauce.JobSpec` with a ``tune`` section, or the path of
    its YAML file) until ``trials`` trials have completed or been pruned.

    ``trials`` and ``parallel`` override the spec's; ``study`` names the study (default: the
    job's name): running again with the same name continues it. ``poll_interval`` is how often
    each trial's reports are read (and the pruner asked). Failed trials are reported in the
    result, not raised; a bad spec raises :class:`~cauce.SpecError`.
    """
    from cauce.tune._session import run_study

    return run_study(
        job,
        trials=trials,
        parallel=parallel,
        study=study,
        cluster=cluster,
        history=history,
        home=Path(home) if home is not None else None,
        console=console,
        poll_interval=poll_interval,
    )


def trials(study: str, *, history: str | None = None) -> list[TrialInfo]:
    """Every trial of ``study``, by number."""
    from cauce.tune._session import read_trials

    return read_trials(study, history)


def studies(*, history: str | None = None) -> list[StudyInfo]:
    """Every study in the history database."""
    from cauce.tune._session import read_studies

    return read_studies(history)
