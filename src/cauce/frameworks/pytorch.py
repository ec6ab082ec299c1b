"""PyTorch: the variables ``torchrun`` gives its workers.

They are the names and meanings of ``torch.distributed.elastic``'s local agent
(``LocalElasticAgent._start_workers``), so ``init_process_group("gloo")`` with the default
``env://`` init method, and scripts that read ``LOCAL_RANK``, run unchanged. Frameworks ``none`` and
``horovod`` get them too: harmless, and handy for scripts that only want a rank.
"""

from __future__ import annotations

from cauce.frameworks._common import World, torch_env
from cauce.frameworks.api import GangLayout, TaskSlot

__all__ = ["framework_env"]


def framework_env(layout: GangLayout, slot: TaskSlot, world: World) -> dict[str, str]:
    """torchrun's variables for a world task; nothing for a task outside the world."""
    return torch_env(layout, slot, world)
