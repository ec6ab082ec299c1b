"""The types of hyperparameter search: trials and studies as people see them, and the console
``tune`` reports to. The entry points (``tune``, ``trials``, ``studies``) are in ``_entry.py``;
``docs/tuning.md`` tells the story.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

__all__ = [
    "TRIAL_STATES",
    "StudyInfo",
    "StudyProgress",
    "StudyResult",
    "StudyStatus",
    "TrialInfo",
    "TrialState",
    "TuneConsole",
    "best_trial",
]


class TrialState(StrEnum):
    """The state a trial is shown in (the pattern of ``cauce.history.JobStatus``)."""

    QUEUED = "queued"  # to be run, or retried
    WAITING = "waiting"  # for resources
    RUNNING = "running"
    COMPLETE = "complete"
    PRUNED = "pruned"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in _FINISHED

    @property
    def counted(self) -> bool:
        """Counts towards the study's target number of trials."""
        return self in (TrialState.COMPLETE, TrialState.PRUNED)


_FINISHED = frozenset({TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED})

#: Every trial state, in the order of a trial's life.
TRIAL_STATES = tuple(TrialState)


class StudyStatus(StrEnum):
    """How a run of ``tune`` ended."""

    COMPLETE = "complete"  # the study has its target number of trials
    FAILED = "failed"  # more than max_failures trials failed
    INTERRUPTED = "interrupted"  # a signal; the running trials are retried by the next run


@dataclass(frozen=True)
class TrialInfo:
    """One trial as people see it. ``value`` is the objective: the final one of a complete
    trial, the last reported one of a running or pruned trial."""

    number: int
    state: TrialState
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
        return self.state.finished


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
        return sum(1 for trial in self.trials if trial.state.counted)

    @property
    def best(self) -> TrialInfo | None:
        return best_trial(self.trials, self.direction)


@dataclass(frozen=True)
class StudyResult:
    """How a run of ``tune`` ended. ``status`` is ``complete`` (the target was reached),
    ``failed`` (more than ``max_failures`` trials failed) or ``interrupted``."""

    study: str
    status: StudyStatus
    reason: str
    metric: str
    direction: str
    trials: tuple[TrialInfo, ...]
    storage: str = ""

    @property
    def ok(self) -> bool:
        return self.status == StudyStatus.COMPLETE

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
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if not done:
        return None
    sign = 1.0 if direction == "min" else -1.0
    # The better value first; among equals, the earlier trial.
    return min(done, key=lambda t: (sign * (t.value or 0.0), t.number))
