"""PyTorch: the variables ``torchrun`` gives its workers.

They are the names and meanings of ``torch.distributed.elastic``'s local agent
(``LocalElasticAgent._start_workers``), so ``init_process_group("gloo")`` with the default
``env://`` init method, and scripts that read ``LOCAL_RANK``, run unchanged. Frameworks ``none`` and
``horovod`` get them too: harmless, and handy for scripts that only want a rank.
"""

from __future__ import annotations

from cauce.frameworks._common import torch_env
from cauce.frameworks.api import Framework

__all__ = ["FRAMEWORK"]

#: Any roles, in the order declared (a ``chief`` or ``master`` first); the world is every
#: tracked task.
FRAMEWORK = Framework("pytorch", env=torch_env)
