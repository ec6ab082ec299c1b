"""The gang lifecycle as a pure state machine: events in, instructions out.

No processes, sockets or clocks here; the driver (``_driver.py``) feeds events and carries out
instructions. Times arrive inside events, so tests can drive every path with plain values.

    PENDING --Reserved--> RUNNING --TaskExited(fail)--> STOPPING --GangStopped--> BACKOFF
       |                     |  all tracked exit 0         |  no restarts left     |
       |                     +--------------------------> STOPPING --> DONE       | RestartDue
       +-- StopRequested --> DONE                                                 v
                                                                               RUNNING (attempt+1)
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from cauce.history import JobStatus, TaskStatus
from cauce.spec import RestartPolicy

__all__ = [
    "Failure",
    "Finish",
    "GangMachine",
    "GangStopped",
    "Phase",
    "Reserved",
    "RestartDue",
    "StartAttempt",
    "StopGang",
    "StopRequested",
    "TaskExited",
    "TaskHung",
    "TaskSilence",
    "TimedOut",
    "WaitBeforeRestart",
]


class Phase(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    BACKOFF = "backoff"
    DONE = "done"


# --- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reserved:
    """Every task's resources are held."""


@dataclass(frozen=True)
class TaskExited:
    task_id: str
    returncode: int  # >= 0 exit code, < 0 signal number
    runtime: float
    attempt: int


@dataclass(frozen=True)
class TaskSilence:
    """A running task when a hang timeout passed: seconds since its last report or heartbeat
    (or since the attempt started), and what the OS said of its processes, where known."""

    task_id: str
    idle: float
    #: "T": one of its processes is stopped (SIGSTOP); "D": in uninterruptible sleep; "": neither
    #: or unknown
    state: str = ""
    #: whether its processes used CPU time just then (None: unknown)
    busy: bool | None = None


@dataclass(frozen=True)
class TaskHung:
    """No report or heartbeat from a running task for ``idle`` seconds (its hang timeout).

    ``silent`` has every running task at that moment, with what the OS says of it: the root
    cause is the task that stopped first (a stopped process, then one stuck in uninterruptible
    sleep without using CPU, else the oldest last report), which need not be ``task_id``: the
    others of a gang wait for a stopped rank, and the first to pass its timeout is one of them.
    """

    task_id: str
    idle: float
    runtime: float
    attempt: int
    silent: tuple[TaskSilence, ...] = ()


@dataclass(frozen=True)
class GangStopped:
    """Every process of the current attempt is gone."""


@dataclass(frozen=True)
class RestartDue:
    """The backoff before a restart has elapsed."""


@dataclass(frozen=True)
class StopRequested:
    reason: str  # "interrupted", "killed by cauce kill", ...


@dataclass(frozen=True)
class TimedOut:
    seconds: float


Event = Reserved | TaskExited | TaskHung | GangStopped | RestartDue | StopRequested | TimedOut

# --- instructions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartAttempt:
    attempt: int


@dataclass(frozen=True)
class StopGang:
    reason: str  # "completed", "failure", "killed", "timeout"


@dataclass(frozen=True)
class WaitBeforeRestart:
    delay: float
    restart: int  # 1-based number of this restart
    max_restarts: int


@dataclass(frozen=True)
class Failure:
    task_id: str
    returncode: int | None  # None when the task was declared hung
    runtime: float
    attempt: int
    hung_for: float | None = None
    #: of a hung task: "T" stopped, "D" in uninterruptible sleep, "" neither or unknown
    state: str = ""
    #: of a hung task: whether it used CPU time when it was found hung (None: unknown)
    busy: bool | None = None


@dataclass(frozen=True)
class Finish:
    status: JobStatus  # succeeded, failed or killed
    failure: Failure | None = None  # the root cause when a task failed
    reason: str = ""  # why, when no task failure explains it (timeout, interrupt)


Instruction = StartAttempt | StopGang | WaitBeforeRestart | Finish


@dataclass
class GangMachine:
    tasks: tuple[str, ...]
    tracked: frozenset[str]
    policy: RestartPolicy
    phase: Phase = Phase.PENDING
    attempt: int = -1
    restarts: int = 0
    exits: dict[str, int] = field(default_factory=dict)
    failure: Failure | None = None
    failures: list[Failure] = field(default_factory=list)
    _stop_reason: str = ""
    _stop_detail: str = ""

    @classmethod
    def for_tasks(
        cls, tasks: Iterable[str], tracked: Iterable[str], policy: RestartPolicy
    ) -> GangMachine:
        return cls(tuple(tasks), frozenset(tracked), policy)

    def handle(self, event: Event) -> list[Instruction]:
        if self.phase is Phase.DONE:
            return []
        match event:
            case Reserved():
                return self._on_reserved()
            case TaskExited():
                return self._on_exit(event)
            case TaskHung():
                return self._on_hung(event)
            case GangStopped():
                return self._on_stopped()
            case RestartDue():
                return self._on_restart_due()
            case StopRequested(reason=reason):
                return self._stop("killed", reason)
            case TimedOut(seconds=seconds):
                return self._stop("timeout", f"timed out after {seconds:g} s")
        raise TypeError(f"unknown event {event!r}")

    def recorded_exit(self, event: Event) -> tuple[TaskExited, TaskStatus] | None:
        """A task's exit and the status it is recorded with, judged before :meth:`handle` takes
        it (a task that fails while its attempt is being stopped was stopped); None for any
        other event."""
        if not isinstance(event, TaskExited):
            return None
        status = TaskStatus.SUCCEEDED if event.returncode == 0 else TaskStatus.FAILED
        if event.attempt == self.attempt and self.phase is not Phase.RUNNING:
            status = TaskStatus.STOPPED if event.returncode != 0 else status
        return event, status

    def _start(self) -> list[Instruction]:
        self.attempt += 1
        self.exits = {}
        self.phase = Phase.RUNNING
        return [StartAttempt(self.attempt)]

    def _on_reserved(self) -> list[Instruction]:
        if self.phase is not Phase.PENDING:
            return []
        return self._start()

    def _on_exit(self, event: TaskExited) -> list[Instruction]:
        if event.attempt != self.attempt or event.task_id in self.exits:
            return []
        self.exits[event.task_id] = event.returncode
        if self.phase is not Phase.RUNNING:
            return []  # exits while stopping are consequences, never root causes
        if event.returncode != 0:
            self.failure = Failure(event.task_id, event.returncode, event.runtime, self.attempt)
            self.failures.append(self.failure)
            self.phase = Phase.STOPPING
            self._stop_reason = "failure"
            return [StopGang("failure")]
        if all(self.exits.get(task) == 0 for task in self.tracked):
            self.phase = Phase.STOPPING
            self._stop_reason = "completed"
            return [StopGang("completed")]
        return []

    def _on_hung(self, event: TaskHung) -> list[Instruction]:
        if (
            self.phase is not Phase.RUNNING
            or event.attempt != self.attempt
            or event.task_id in self.exits
        ):
            return []
        first = _stopped_first(event, self.exits)
        self.failure = Failure(
            first.task_id, None, event.runtime, self.attempt, first.idle, first.state, first.busy
        )
        self.failures.append(self.failure)
        self.phase = Phase.STOPPING
        self._stop_reason = "failure"
        return [StopGang("failure")]

    def _on_stopped(self) -> list[Instruction]:
        if self.phase is not Phase.STOPPING:
            return []
        reason = self._stop_reason
        if reason == "completed":
            self.phase = Phase.DONE
            return [Finish(JobStatus.SUCCEEDED)]
        if reason == "failure":
            if self.restarts < self.policy.max_restarts and not self.permanent:
                self.restarts += 1
                self.phase = Phase.BACKOFF
                delay = self.policy.delay(self.restarts)
                return [WaitBeforeRestart(delay, self.restarts, self.policy.max_restarts)]
            self.phase = Phase.DONE
            return [Finish(JobStatus.FAILED, failure=self.failure)]
        self.phase = Phase.DONE
        status = JobStatus.KILLED if reason == "killed" else JobStatus.FAILED
        return [Finish(status, failure=None, reason=self._stop_detail)]

    @property
    def permanent(self) -> bool:
        """The failure is one no restart mends: its exit code is in the policy's never_on."""
        code = self.failure.returncode if self.failure is not None else None
        return code is not None and code in self.policy.never_on

    def _on_restart_due(self) -> list[Instruction]:
        if self.phase is not Phase.BACKOFF:
            return []
        return self._start()

    def _stop(self, reason: str, detail: str) -> list[Instruction]:
        if self.phase is Phase.STOPPING and self._stop_reason == "completed":
            return []  # every tracked task already succeeded; the job succeeds
        self._stop_reason, self._stop_detail = reason, detail
        if self.phase is Phase.RUNNING:
            self.phase = Phase.STOPPING
            return [StopGang(reason)]
        if self.phase is Phase.STOPPING:
            return []  # already stopping; it now ends as killed/timed out, not restarted
        self.phase = Phase.DONE
        status = JobStatus.KILLED if reason == "killed" else JobStatus.FAILED
        return [Finish(status, reason=detail)]


def _stopped_first(event: TaskHung, exits: dict[str, int]) -> TaskSilence:
    """The silent task that stopped first: a stopped one, else one stuck in uninterruptible
    sleep using no CPU, else the one silent the longest (ties: the one that timed out)."""
    silent = [s for s in event.silent if s.task_id not in exits]
    if not any(s.task_id == event.task_id for s in silent):
        silent.append(TaskSilence(event.task_id, event.idle))

    def kind(s: TaskSilence) -> int:
        return 0 if s.state == "T" else 1 if s.state == "D" and s.busy is False else 2

    first = min(silent, key=lambda s: (kind(s), -s.idle, s.task_id != event.task_id))
    # a state that did not single the task out (a D while it used CPU) says nothing of the hang
    return first if kind(first) < 2 else dataclasses.replace(first, state="")
