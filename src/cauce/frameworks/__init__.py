"""The env contract: what each task of a gang finds in its environment, per framework.

Each framework module exposes one :class:`Framework` (its roles and their order, the checks of
a role set, the world, its variables); the registry finds them by name (``get_framework``).
``rank_order`` says how a gang's roles are laid out; ``task_env`` computes one task's variables
from the layout. Both are pure. ``start_horovod_kv`` starts the key-value store that Horovod's
Gloo rendezvous needs; the driver runs it for a ``horovod`` gang. ``docs/env-contract.md`` lists
every variable.
"""

from __future__ import annotations

from cauce.frameworks._common import host_port, thread_env
from cauce.frameworks._horovod_kv import HorovodKVServer
from cauce.frameworks._horovod_kv import start as start_horovod_kv
from cauce.frameworks._horovod_kv import stop as stop_horovod_kv
from cauce.frameworks.api import Framework, GangLayout, TaskSlot
from cauce.frameworks.registry import (
    FRAMEWORKS,
    contract_names,
    get_framework,
    rank_order,
    task_env,
)

__all__ = [
    "FRAMEWORKS",
    "Framework",
    "GangLayout",
    "HorovodKVServer",
    "TaskSlot",
    "contract_names",
    "get_framework",
    "host_port",
    "rank_order",
    "start_horovod_kv",
    "stop_horovod_kv",
    "task_env",
    "thread_env",
]
