"""The env contract: what each task of a gang finds in its environment, and what a framework is.

Everything here is pure: given the layout of a gang (every task's role, index, host, port and
GPUs), compute one task's variables. The local cluster calls it in the driver; a Spark barrier
task calls the same function on the executor once the addresses are gathered, so both give the
same contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cauce.spec import RoleSpec

if TYPE_CHECKING:
    from cauce.frameworks._common import World

__all__ = ["LEADER_ROLES", "EnvFunction", "Framework", "GangLayout", "RoleProblem", "TaskSlot"]

#: Roles that lead a gang when present: first in rank order, and ``IS_CHIEF`` is theirs.
LEADER_ROLES = ("chief", "master")


@dataclass(frozen=True)
class TaskSlot:
    """Where one task of a gang runs."""

    task_id: str  # "worker-0": role, dash, index within the role
    role: str
    index: int  # index within the role, 0-based
    host: str  # address the other tasks reach this one at
    port: int  # a free port reserved for this task (its TF/PS server port, MASTER_PORT on rank 0)
    gpus: tuple[str, ...] = ()  # device ids for CUDA_VISIBLE_DEVICES
    cpus: float = 1.0
    tracked: bool = True


@dataclass(frozen=True)
class GangLayout:
    """All tasks of one attempt of a gang, in rank order (see ``rank_order``)."""

    job_id: str
    job_name: str
    framework: str
    attempt: int  # 0 for the first attempt, +1 per restart
    max_restarts: int
    slots: tuple[TaskSlot, ...]
    #: "host:port" of a rendezvous service the driver runs for the gang, when the framework needs
    #: one: Horovod's Gloo key-value store (see ``cauce.frameworks.start_horovod_kv``). None
    #: falls back to world rank 0's host and port.
    rendezvous: str | None = None

    def slot(self, task_id: str) -> TaskSlot:
        for slot in self.slots:
            if slot.task_id == task_id:
                return slot
        raise KeyError(task_id)


#: The variables a framework adds, for one task, to those every framework gives. Pure.
EnvFunction = Callable[[GangLayout, TaskSlot, "World"], dict[str, str]]
#: One problem with a job's roles: the field path (``roles.chief.instances``) and the message.
RoleProblem = tuple[str, str]


def _any_roles(roles: Sequence[RoleSpec]) -> list[RoleProblem]:
    del roles
    return []


@dataclass(frozen=True)
class Framework:
    """Everything cauce knows about one framework. Each framework module exposes one, as
    ``FRAMEWORK``; ``cauce.frameworks.registry`` lists them by name."""

    name: str
    env: EnvFunction
    #: The roles it knows, in rank order; empty for any role, in the order declared, a leader
    #: role (``chief``, ``master``) first.
    roles: tuple[str, ...] = ()
    #: The roles whose tasks train together and have a rank (the *world*); empty for every
    #: tracked task.
    world: tuple[str, ...] = ()
    #: Roles untracked unless the spec says otherwise (TensorFlow's ``ps``).
    untracked: tuple[str, ...] = ()
    #: The problems of a job's role set, in the order found; the spec parser reports the first.
    check_roles: Callable[[Sequence[RoleSpec]], list[RoleProblem]] = _any_roles

    def rank_order(self, roles: Sequence[RoleSpec]) -> list[RoleSpec]:
        """The roles in the order their tasks are laid out (the order of ``GangLayout.slots``).

        Roles the framework does not know (the spec parser refuses them) keep their order, after
        the known ones.
        """
        fixed = self.roles
        if fixed:
            known = len(fixed)
            return sorted(
                roles, key=lambda role: fixed.index(role.name) if role.name in fixed else known
            )
        return sorted(roles, key=lambda role: 0 if role.name in LEADER_ROLES else 1)
