"""The frameworks cauce knows, by name: each one's roles, rank order, checks and variables."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from cauce.frameworks import horovod, jax, mxnet, pytorch, tensorflow
from cauce.frameworks._common import World, base_env, torch_env
from cauce.frameworks.api import Framework, GangLayout, TaskSlot
from cauce.spec import RoleSpec

__all__ = [
    "DRIVER_NAMES",
    "FRAMEWORKS",
    "contract_names",
    "get_framework",
    "rank_order",
    "task_env",
]

#: ``framework: none``: no framework of its own, but torchrun's variables all the same (a rank
#: for scripts that want one), as docs/env-contract.md says.
_NONE = Framework("none", env=torch_env)
_REGISTRY: dict[str, Framework] = {
    fw.name: fw
    for fw in (
        pytorch.FRAMEWORK,
        tensorflow.FRAMEWORK,
        jax.FRAMEWORK,
        horovod.FRAMEWORK,
        mxnet.FRAMEWORK,
        _NONE,
    )
}
#: The names a job's ``framework:`` may take.
FRAMEWORKS: tuple[str, ...] = tuple(_REGISTRY)
#: Variables the driver sets beside the contract, for the runtime: where ``cauce.report``
#: writes, a trial's parameters, and the ``tensorboard:`` section's folder, switch and port.
DRIVER_NAMES = (
    "CAUCE_PROGRESS_FILE",
    "CAUCE_PARAMS",
    "CAUCE_TENSORBOARD_DIR",
    "CAUCE_TENSORBOARD_REPORT",
    "TB_PORT",
)


def get_framework(name: str) -> Framework:
    """The framework called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown framework {name!r}: use one of {', '.join(FRAMEWORKS)}"
        ) from None


def rank_order(framework: str, roles: Sequence[RoleSpec]) -> list[RoleSpec]:
    """The roles in the order their tasks are laid out (the order of ``GangLayout.slots``).

    TensorFlow: chief, worker, ps, evaluator. MXNet: scheduler, server, worker. Others: the order
    of declaration, except that a role named ``chief`` or ``master`` comes first. Roles a
    framework does not know (the spec parser refuses them) keep their order, after the known ones.
    """
    return get_framework(framework).rank_order(roles)


def task_env(layout: GangLayout, task_id: str) -> dict[str, str]:
    """Every variable the contract gives task ``task_id`` of ``layout``. Pure: no I/O.

    Raises ``KeyError`` for a task that is not in the layout and ``ValueError`` for an unknown
    framework.
    """
    framework = get_framework(layout.framework)
    slot = layout.slot(task_id)
    world = World(layout, framework.world)
    env = base_env(layout, slot, world)
    for name, value in framework.env(layout, slot, world).items():
        env.setdefault(name, value)
    return env


@functools.cache
def contract_names(framework: str | None = None) -> frozenset[str]:
    """Every variable the contract of ``framework`` may set, for any role; with no framework,
    those of every framework and ``DRIVER_NAMES``. The resolve step drops inherited values of
    these, so that a task outside the world (a ``ps``) never sees the ``RANK`` of a torchrun that
    started cauce itself."""
    if framework is None:
        names = set(DRIVER_NAMES)
        for name in FRAMEWORKS:
            names.update(contract_names(name))
        return frozenset(names)
    roles = get_framework(framework).roles or ("chief", "worker")
    slots = tuple(
        TaskSlot(f"{role}-0", role, 0, "127.0.0.1", 1000 + i, ("0",))
        for i, role in enumerate(roles)
    )
    layout = GangLayout("j", "j", framework, 0, 0, slots, rendezvous="127.0.0.1:1")
    return frozenset(name for slot in slots for name in task_env(layout, slot.task_id))
