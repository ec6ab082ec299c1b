"""The env contract: what each task of a gang finds in its environment, per framework.

``rank_order`` says how a gang's roles are laid out; ``task_env`` computes one task's variables
from the layout. Both are pure. ``start_horovod_kv`` starts the key-value store that Horovod's
Gloo rendezvous needs; the driver runs it for a ``horovod`` gang. ``docs/env-contract.md`` lists
every variable.
"""

from __future__ import annotations

from cauce.frameworks._horovod_kv import HorovodKVServer
from cauce.frameworks._horovod_kv import start as start_horovod_kv
from cauce.frameworks.api import GangLayout, TaskSlot
from cauce.frameworks.registry import rank_order, task_env

__all__ = [
    "GangLayout",
    "HorovodKVServer",
    "TaskSlot",
    "rank_order",
    "start_horovod_kv",
    "task_env",
]
