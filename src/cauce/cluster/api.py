"""The cluster contract: what resources exist, and how a gang is placed and started.

A gang is all-or-nothing: :meth:`Cluster.try_reserve` either reserves every task's resources
or none, answering :class:`Waiting` with the reason. :meth:`Cluster.check` refuses at once a gang
that could never fit, whatever else finishes.

Thread safety: a :class:`Cluster` is used from the driver's main thread only. The callbacks a
:class:`RunningGang` is given may be called from other threads and must be thread-safe.

Lifetime: whoever makes a cluster object owns it and closes it (:meth:`Cluster.close`) when done,
usually with ``with cauce.cluster.open_cluster(address, spec) as cluster:``; nobody else closes
it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from cauce.frameworks.api import GangLayout
from cauce.spec import Resources

__all__ = [
    "SHELL_NOTE",
    "Cluster",
    "DriverAddress",
    "GangRequest",
    "HostCapacity",
    "OutputSink",
    "Reservation",
    "RunningGang",
    "TaskExit",
    "TaskLaunch",
    "TaskPlace",
    "TaskProcesses",
    "TaskRequest",
    "Waiting",
]


@dataclass(frozen=True)
class TaskRequest:
    task_id: str
    role: str
    index: int
    resources: Resources
    tracked: bool = True


@dataclass(frozen=True)
class GangRequest:
    job_id: str
    tasks: tuple[TaskRequest, ...]

    @property
    def cpus(self) -> float:
        return sum(task.resources.cpus for task in self.tasks)

    @property
    def declared_cpus(self) -> float:
        """The CPUs of the tasks whose spec states ``resources.cpus``."""
        return sum(task.resources.cpus for task in self.tasks if task.resources.cpus_declared)

    @property
    def memory(self) -> int:
        return sum(task.resources.memory for task in self.tasks)

    @property
    def gpus(self) -> int:
        return sum(task.resources.gpus for task in self.tasks)


@dataclass(frozen=True)
class HostCapacity:
    host: str
    cpus: float
    memory: int
    gpus: tuple[str, ...]


@dataclass(frozen=True)
class Waiting:
    """The gang cannot be placed now but could be later; ``reason`` says what it waits for."""

    reason: str


@dataclass(frozen=True)
class DriverAddress:
    """Where the driver listens (``bind``) and the address its tasks reach it at."""

    bind: str
    advertised: str


@dataclass(frozen=True)
class TaskPlace:
    """Where a started task really runs, as its host reported it."""

    host: str
    port: int
    gpus: tuple[str, ...]
    pid: int


#: What ``cauce run --dry-run`` says under a plan whose tasks run as the driver's children.
SHELL_NOTE = (
    "(ports are fresh free ports for each attempt; the rest of the environment is\n"
    " inherited from this shell)"
)


class Reservation(abc.ABC):
    """Resources held for one gang, kept across its restarts and freed by :meth:`release`."""

    #: task_id -> (host, GPU ids)
    placements: Mapping[str, tuple[str, tuple[str, ...]]]

    def preview(self) -> tuple[dict[str, int] | None, str]:
        """For a dry run only: the ports to show (None: :meth:`ports` ones) and the note to
        print under the plan. A cluster that learns hosts only when tasks start (Spark) asks
        it where they would go now and updates :attr:`placements`."""
        return None, SHELL_NOTE

    @abc.abstractmethod
    def ports(self, task_ids: Sequence[str]) -> dict[str, int]:
        """A free port per task on its host, fresh for each attempt."""

    @abc.abstractmethod
    def release(self) -> None:
        """Free the resources. Idempotent."""

    def renew(self) -> Waiting | None:
        """Before a restart: check again that the held resources are there. None when they
        are (the default: held resources stay held), :class:`Waiting` while they are not (a
        lost host's share of a Spark cluster), :class:`~cauce.errors.PlacementError` once the
        cluster gives up waiting. Called from the driver's thread, never blocks for long."""
        return None


@dataclass(frozen=True)
class TaskLaunch:
    """One process to start: what, where, with which environment."""

    task_id: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str
    log_path: str
    #: Modules a warm start imports once for the job's Python tasks (``preload:``); a cluster
    #: that has no warm starts starts the task as it would without
    preload: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskExit:
    task_id: str
    #: exit status as ``subprocess`` reports it: >= 0 an exit code, < 0 a signal number
    returncode: int
    #: seconds since the task started
    runtime: float


@dataclass(frozen=True)
class TaskProcesses:
    """What the OS says about the processes of one task (its process group) at one moment."""

    #: a letter of ``/proc/PID/stat``: ``T`` if one of them is stopped (SIGSTOP, SIGTSTP, a
    #: debugger), else ``D`` if one is in uninterruptible sleep, else the main process's state
    state: str
    #: user plus system CPU seconds they have used so far
    cpu: float


#: Called with (task_id, line) for every line a task prints; thread-safe.
OutputSink = Callable[[str, str], None]


class RunningGang(abc.ABC):
    """The processes of one attempt of a gang."""

    def places(self) -> dict[str, TaskPlace]:
        """Where the tasks that have started run, when the cluster learns that only as they
        start (Spark's executors); {} when the plan said it already. Thread-safe."""
        return {}

    @abc.abstractmethod
    def pids(self) -> dict[str, int]:
        """task_id -> pid of the task's main process (also its process group on local)."""

    @abc.abstractmethod
    def stop(self, grace: float) -> None:
        """Ask every task to stop (SIGTERM), kill what is left after ``grace`` seconds, and
        return once every process of the gang is gone."""

    def probe(self) -> dict[str, TaskProcesses]:
        """What the OS says about each running task's processes, by task id, where the driver
        can see them (the local cluster); empty where it cannot (tasks on remote executors)."""
        return {}

    def show_stacks(self, task_id: str) -> bool:
        """Have a running task print each of its threads' stacks to its output, where the
        cluster can (a warm task of the local cluster): True if asked."""
        return False


class Cluster(abc.ABC):
    """A resource manager that places gangs and starts their tasks."""

    name: str
    #: Seconds a dry run retries a gang that must wait, for resources that are still coming
    #: (the executors of a Spark application that has just started register one by one).
    dry_run_wait: float = 0.0
    #: True when tasks start on this host, with its files and programs (the local cluster):
    #: the driver can then check the commands before starting them.
    starts_here: bool = False

    @abc.abstractmethod
    def describe(self) -> list[HostCapacity]:
        """The hosts and what each has."""

    @abc.abstractmethod
    def check(self, request: GangRequest) -> None:
        """Raise :class:`~cauce.errors.PlacementError` if the gang can never fit."""

    def notes(self, request: GangRequest) -> list[str]:
        """What the user should know about a gang that fits (a host it oversubscribes), one
        line each; said once, before the job starts."""
        return []

    @abc.abstractmethod
    def try_reserve(self, request: GangRequest) -> Reservation | Waiting:
        """Reserve every task of the gang, or nothing. Never blocks for long."""

    @abc.abstractmethod
    def start(
        self,
        layout: GangLayout,
        launches: Sequence[TaskLaunch],
        on_output: OutputSink,
        on_exit: Callable[[TaskExit], None],
        *,
        grace: float = 10.0,
    ) -> RunningGang:
        """Start one attempt. ``on_exit`` is called once per task when its process ends.
        ``grace`` is how long tasks get between SIGTERM and SIGKILL if the driver dies."""

    def driver_address(self) -> DriverAddress:
        """Where services that the driver runs for a gang (Horovod's key-value store) listen,
        and the address the tasks reach them at: loopback unless tasks run on other hosts."""
        return DriverAddress("127.0.0.1", "127.0.0.1")

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of what the cluster holds for its gangs (the local process reaper, a reference
        to the Spark application). Idempotent: a second call does nothing. The owner calls it
        once the gangs it started on this object have stopped."""
