"""PyTorch: the variables of ``torchrun``'s workers and of a pod of Kubeflow's PyTorchJob.

torchrun's names and meanings are those of ``torch.distributed.elastic``'s local agent
(``LocalElasticAgent._start_workers``), so ``init_process_group("gloo")`` with the default
``env://`` init method, and scripts that read ``LOCAL_RANK``, run unchanged. Frameworks ``none`` and
``horovod`` get them too: harmless, and handy for scripts that only want a rank.

Kubeflow's Training Operator (``pkg/controller.v1/pytorch/envvar.go`` and ``master.go`` in
kubeflow/training-operator v1.9.0) gives every pod of a PyTorchJob ``MASTER_ADDR``,
``MASTER_PORT``, ``WORLD_SIZE`` and ``RANK`` (torchrun's names, above) and the ``PET_*`` names that
``torchrun`` reads as the defaults of its options when it is started in the pod. Here a task is a
pod that runs one process: ``PET_NNODES`` is the world size, ``PET_NODE_RANK`` the rank and
``PET_NPROC_PER_NODE`` 1, so ``torchrun train.py`` with no option, started as a task's command,
joins the gang with one worker process.
"""

from __future__ import annotations

from cauce.frameworks._common import World, master_slot, torch_env
from cauce.frameworks.api import Framework, GangLayout, TaskSlot

__all__ = ["FRAMEWORK", "framework_env", "kubeflow_env"]


def kubeflow_env(layout: GangLayout, slot: TaskSlot, world: World) -> dict[str, str]:
    """The ``PET_*`` names of Kubeflow's PyTorchJob, for a world task; empty outside the world."""
    rank = world.rank(slot.task_id)
    if rank < 0:
        return {}
    master = master_slot(layout, world)
    return {
        "PET_MASTER_ADDR": master.host,
        "PET_MASTER_PORT": str(master.port),
        "PET_NNODES": str(world.size),
        "PET_NODE_RANK": str(rank),
        "PET_NPROC_PER_NODE": "1",
    }


def framework_env(layout: GangLayout, slot: TaskSlot, world: World) -> dict[str, str]:
    """torchrun's variables, then Kubeflow's ``PET_*`` names."""
    return {**torch_env(layout, slot, world), **kubeflow_env(layout, slot, world)}


#: Any roles, in the order declared (a ``chief`` or ``master`` first); the world is every
#: tracked task.
FRAMEWORK = Framework("pytorch", env=framework_env)
