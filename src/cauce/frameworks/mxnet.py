"""MXNet's parameter server (ps-lite): the ``DMLC_*`` variables.

ps-lite reads ``DMLC_ROLE``, ``DMLC_PS_ROOT_URI`` and ``DMLC_PS_ROOT_PORT`` (the scheduler),
``DMLC_NUM_SERVER`` and ``DMLC_NUM_WORKER``; ``DMLC_NODE_HOST`` is the address a server or worker
tells the others. There is no worker or server id to give: the scheduler assigns them, and ps-lite
sets ``DMLC_RANK`` itself once it has one (a ``DMLC_RANK`` set beforehand stops ps-lite from
recording its id, so cauce never sets it). A server or scheduler task only has to
``import mxnet``: MXNet then serves and exits.
"""

from __future__ import annotations

from collections.abc import Sequence

from cauce.frameworks._common import World
from cauce.frameworks.api import Framework, GangLayout, RoleProblem, TaskSlot
from cauce.spec import RoleSpec

__all__ = ["FRAMEWORK", "ROLES", "framework_env"]

#: Roles MXNet's parameter-server launcher knows (``DMLC_ROLE``), in rank order.
ROLES = ("scheduler", "server", "worker")


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


def check_roles(roles: Sequence[RoleSpec]) -> list[RoleProblem]:
    """Only MXNet's roles; servers need a scheduler; one scheduler at most."""
    problems: list[RoleProblem] = [
        (f"roles.{role.name}", f"is not an MXNet role: use {', '.join(ROLES)}")
        for role in roles
        if role.name not in ROLES
    ]
    by_name = {role.name: role for role in roles}
    if "server" in by_name and "scheduler" not in by_name:
        problems.append(
            ("roles", "has MXNet servers but no scheduler: add roles.scheduler with instances: 1")
        )
    scheduler = by_name.get("scheduler")
    if scheduler is not None and scheduler.instances != 1:
        problems.append(
            ("roles.scheduler.instances", f"must be 1 for MXNet, got {scheduler.instances}")
        )
    return problems


#: The world is the workers.
FRAMEWORK = Framework(
    "mxnet", env=framework_env, roles=ROLES, world=("worker",), check_roles=check_roles
)
