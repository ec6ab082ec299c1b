"""MXNet's parameter server (ps-lite): the ``DMLC_*`` variables.

ps-lite reads ``DMLC_ROLE``, ``DMLC_PS_ROOT_URI`` and ``DMLC_PS_ROOT_PORT`` (the scheduler),
``DMLC_NUM_SERVER`` and ``DMLC_NUM_WORKER``; ``DMLC_NODE_HOST`` is the address a server or worker
tells the others. There is no worker or server id to give: the scheduler assigns them, and ps-lite
sets ``DMLC_RANK`` itself once it has one (a ``DMLC_RANK`` set beforehand stops ps-lite from
recording its id, so cauce never sets it). A server or scheduler task only has to
``import mxnet``: MXNet then serves and exits.
"""

from __future__ import annotations

from cauce.frameworks._common import World
from cauce.frameworks.api import GangLayout, TaskSlot

__all__ = ["framework_env"]


def framework_env(layout: GangLayout, slot: TaskSlot, world: World) -> dict[str, str]:
    """``DMLC_*`` for every task of an MXNet gang."""
    del world
    env = {
        "DMLC_ROLE": slot.role,
        "DMLC_NUM_SERVER": str(sum(1 for s in layout.slots if s.role == "server")),
        "DMLC_NUM_WORKER": str(sum(1 for s in layout.slots if s.role == "worker")),
        "DMLC_NODE_HOST": slot.host,
    }
    scheduler = next((s for s in layout.slots if s.role == "scheduler"), None)
    if scheduler is not None:
        env["DMLC_PS_ROOT_URI"] = scheduler.host
        env["DMLC_PS_ROOT_PORT"] = str(scheduler.port)
    return env
