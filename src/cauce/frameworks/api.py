"""The env contract: what each task of a gang finds in its environment.

Everything here is pure: given the layout of a gang (every task's role, index, host, port and
GPUs), compute one task's variables. The local cluster calls it in the driver; a Spark barrier
task calls the same function on the executor once the addresses are gathered, so both give the
same contract.
"""

from __future__ import annotations

from dataclasses import dataclass


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
