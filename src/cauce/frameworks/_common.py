"""What every framework shares: the world of a gang, and the variables every task gets.

The *world* is the ordered list of tasks that take part in collective training (TensorFlow's
chief and workers, MXNet's workers, every tracked task elsewhere). A task's rank is its position
in the world; tasks outside it (parameter servers, evaluators, schedulers, untracked helpers) have
rank -1. Hosts are numbered in order of first appearance among the world's tasks, as torchrun's
``GROUP_RANK`` and Horovod's cross ranks expect.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from cauce.frameworks.api import LEADER_ROLES, GangLayout, TaskSlot

__all__ = [
    "Placement",
    "World",
    "base_env",
    "host_port",
    "master_slot",
    "thread_env",
    "torch_env",
]


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 literal in brackets (``[::1]:29500``)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass(frozen=True)
class Placement:
    """Where one world task stands among the others (torchrun's and Horovod's numbers)."""

    rank: int
    local_rank: int  # index among world tasks on the same host
    local_size: int  # world tasks on that host
    group_rank: int  # index of the host among the world's hosts, in order of first appearance
    group_size: int  # distinct hosts in the world
    role_rank: int  # index among world tasks of the same role
    role_size: int  # world tasks of that role
    cross_rank: int  # index of the host among hosts with a task at this local rank (Horovod)
    cross_size: int  # hosts with a task at this local rank


class World:
    """The tasks of a layout that train together, in slot order: those of ``roles``, or every
    tracked task when ``roles`` is empty (see ``Framework.world``)."""

    def __init__(self, layout: GangLayout, roles: tuple[str, ...] = ()) -> None:
        if roles:
            members = [slot for slot in layout.slots if slot.role in roles]
        else:
            members = [slot for slot in layout.slots if slot.tracked]
        self.layout = layout
        self.slots: tuple[TaskSlot, ...] = tuple(members)
        self._rank = {slot.task_id: rank for rank, slot in enumerate(members)}
        hosts: list[str] = []
        for slot in members:
            if slot.host not in hosts:
                hosts.append(slot.host)
        self.hosts: tuple[str, ...] = tuple(hosts)

    @property
    def size(self) -> int:
        return len(self.slots)

    def rank(self, task_id: str) -> int:
        """Position in the world, -1 for a task outside it."""
        return self._rank.get(task_id, -1)

    def placement(self, slot: TaskSlot) -> Placement:
        """Numbers for a world task; raises KeyError for a task outside the world."""
        rank = self._rank[slot.task_id]
        on_host = [s.task_id for s in self.slots if s.host == slot.host]
        same_role = [s.task_id for s in self.slots if s.role == slot.role]
        local_rank = on_host.index(slot.task_id)
        # Horovod's cross communicator: the hosts that have a task at this local rank.
        per_host = {host: sum(1 for s in self.slots if s.host == host) for host in self.hosts}
        cross_hosts = [host for host in self.hosts if per_host[host] > local_rank]
        return Placement(
            rank=rank,
            local_rank=local_rank,
            local_size=len(on_host),
            group_rank=self.hosts.index(slot.host),
            group_size=len(self.hosts),
            role_rank=same_role.index(slot.task_id),
            role_size=len(same_role),
            cross_rank=cross_hosts.index(slot.host),
            cross_size=len(cross_hosts),
        )


def master_slot(layout: GangLayout, world: World) -> TaskSlot:
    """World rank 0's slot; the first slot when the world is empty."""
    if world.slots:
        return world.slots[0]
    return layout.slots[0]


def _is_chief(layout: GangLayout, world: World, slot: TaskSlot) -> bool:
    leaders = [s for s in layout.slots if s.role in LEADER_ROLES]
    if leaders:
        return slot.task_id == leaders[0].task_id
    return world.rank(slot.task_id) == 0


def thread_env(cpus: float) -> dict[str, str]:
    """The thread counts of a task with ``cpus`` CPUs (at least one thread)."""
    threads = str(max(1, math.floor(cpus)))
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def base_env(layout: GangLayout, slot: TaskSlot, world: World) -> dict[str, str]:
    """The variables of every framework: cauce's own, TonY's, devices and threads."""
    master = master_slot(layout, world)
    cluster: dict[str, list[str]] = {}
    for other in layout.slots:
        cluster.setdefault(other.role, []).append(host_port(other.host, other.port))
    return {
        "CAUCE_JOB_ID": layout.job_id,
        "CAUCE_JOB_NAME": layout.job_name,
        "CAUCE_TASK_ID": slot.task_id,
        "CAUCE_ROLE": slot.role,
        "CAUCE_ROLE_INDEX": str(slot.index),
        "CAUCE_RANK": str(world.rank(slot.task_id)),
        "CAUCE_WORLD_SIZE": str(world.size),
        "CAUCE_ATTEMPT": str(layout.attempt),
        "CAUCE_FRAMEWORK": layout.framework,
        # TonY's names, for scripts written for it.
        "JOB_NAME": slot.role,
        "TASK_INDEX": str(slot.index),
        "TASK_NUM": str(sum(1 for other in layout.slots if other.role == slot.role)),
        "IS_CHIEF": "true" if _is_chief(layout, world, slot) else "false",
        "CLUSTER_SPEC": json.dumps(cluster, separators=(",", ":")),
        "INIT_METHOD": f"tcp://{host_port(master.host, master.port)}",
        "CUDA_VISIBLE_DEVICES": ",".join(slot.gpus),
        **thread_env(slot.cpus),
    }


def torch_env(layout: GangLayout, slot: TaskSlot, world: World) -> dict[str, str]:
    """torchrun's variables (torch.distributed.elastic's local agent) for a world task.

    Empty for a task outside the world.
    """
    if world.rank(slot.task_id) < 0:
        return {}
    where = world.placement(slot)
    master = master_slot(layout, world)
    return {
        "MASTER_ADDR": master.host,
        "MASTER_PORT": str(master.port),
        "RANK": str(where.rank),
        "LOCAL_RANK": str(where.local_rank),
        "WORLD_SIZE": str(world.size),
        "LOCAL_WORLD_SIZE": str(where.local_size),
        "GROUP_RANK": str(where.group_rank),
        "GROUP_WORLD_SIZE": str(where.group_size),
        "ROLE_RANK": str(where.role_rank),
        "ROLE_WORLD_SIZE": str(where.role_size),
        "ROLE_NAME": slot.role,
        "TORCHELASTIC_RESTART_COUNT": str(layout.attempt),
        "TORCHELASTIC_MAX_RESTARTS": str(layout.max_restarts),
        "TORCHELASTIC_RUN_ID": layout.job_id,
        # No agent hosts a store here: rank 0's init_process_group serves it. Said explicitly so
        # that a driver itself started by torchrun does not leak "True" into its tasks.
        "TORCHELASTIC_USE_AGENT_STORE": "False",
    }
