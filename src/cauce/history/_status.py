"""Job and task statuses: the strings the history stores and the CLI prints, typed.

The pattern for every status of cauce (trial states in ``cauce.tune.api``, pipeline step
statuses): a :class:`~enum.StrEnum` whose values are the stored or printed strings (so rows,
JSON and CLI output stay the same), defined in the lowest layer that stores or shows them, with
each group of statuses (``active``, ``finished``) defined once, as a property.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["JobStatus", "TaskStatus"]


class JobStatus(StrEnum):
    PENDING = "pending"
    WAITING = "waiting"  # for resources
    RUNNING = "running"
    RESTARTING = "restarting"  # in the backoff before a restart
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    LOST = "lost"  # its driver died without a word
    PRUNED = "pruned"  # a trial that the tuner stopped early: neither a success nor a failure

    @property
    def active(self) -> bool:
        """A driver works on it (or died without saying so: then it is found lost)."""
        return self in _ACTIVE


_ACTIVE = frozenset({JobStatus.PENDING, JobStatus.WAITING, JobStatus.RUNNING, JobStatus.RESTARTING})


class TaskStatus(StrEnum):
    """One attempt of one task."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # exited non-zero by itself
    STOPPED = "stopped"  # stopped by the driver (another task failed, a kill, a timeout)
