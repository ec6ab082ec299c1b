"""TensorFlow: ``TF_CONFIG``, as ``TFConfigClusterResolver`` reads it.

The cluster lists the roles ``chief``, ``worker`` and ``ps`` (those present, each in index order);
``task`` says which of them this process is. An evaluator is not part of the training cluster:
it sees a cluster of itself alone, and no other task sees it. ``multi_worker_util`` accepts an
``evaluator`` task type that is absent from the cluster, and treats chief (or worker 0 when there
is no chief) as the leader of collectives, which is world rank 0 here too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from cauce.frameworks._common import World, host_port
from cauce.frameworks.api import Framework, GangLayout, RoleProblem, TaskSlot
from cauce.spec import RoleSpec

__all__ = ["FRAMEWORK", "ROLES", "TRAINING_ROLES", "framework_env", "tf_config"]

#: Roles TensorFlow gives a meaning to, in the order ranks are assigned.
ROLES = ("chief", "worker", "ps", "evaluator")
#: Roles that make up the training cluster, in TF_CONFIG's order.
TRAINING_ROLES = ("chief", "worker", "ps")


def tf_config(layout: GangLayout, slot: TaskSlot) -> dict[str, object]:
    """The ``TF_CONFIG`` document of one task, as a dict."""
    if slot.role == "evaluator":
        return {
            "cluster": {"evaluator": [host_port(slot.host, slot.port)]},
            "task": {"type": "evaluator", "index": 0},
        }
    cluster: dict[str, list[str]] = {}
    for role in TRAINING_ROLES:
        members = sorted((s for s in layout.slots if s.role == role), key=lambda s: s.index)
        if members:
            cluster[role] = [host_port(s.host, s.port) for s in members]
    return {"cluster": cluster, "task": {"type": slot.role, "index": slot.index}}


def framework_env(layout: GangLayout, slot: TaskSlot, world: World) -> dict[str, str]:
    """``TF_CONFIG`` for every task."""
    del world  # the world (chief + workers) is implied by the cluster itself
    return {"TF_CONFIG": json.dumps(tf_config(layout, slot), separators=(",", ":"))}


def check_roles(roles: Sequence[RoleSpec]) -> list[RoleProblem]:
    """Only TensorFlow's roles; one chief and one evaluator at most; a chief or a worker."""
    problems: list[RoleProblem] = []
    for role in roles:
        if role.name not in ROLES:
            problems.append(
                (f"roles.{role.name}", f"is not a TensorFlow role: use {', '.join(ROLES)}")
            )
        if role.name in ("chief", "evaluator") and role.instances > 1:
            problems.append(
                (
                    f"roles.{role.name}.instances",
                    f"must be 1 for TensorFlow's {role.name}, got {role.instances}",
                )
            )
    if not any(role.name in ("chief", "worker") for role in roles):
        problems.append(("roles", "needs a chief or a worker role for TensorFlow"))
    return problems


#: The world is chief and workers; a parameter server is untracked unless the spec says so.
FRAMEWORK = Framework(
    "tensorflow",
    env=framework_env,
    roles=ROLES,
    world=("chief", "worker"),
    untracked=("ps",),
    check_roles=check_roles,
)
