"""Which roles come first, and which variables each framework adds to the common ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cauce.frameworks import horovod, jax, mxnet, pytorch, tensorflow
from cauce.frameworks._common import LEADER_ROLES, World, base_env
from cauce.frameworks.api import GangLayout, TaskSlot
from cauce.spec._types import FRAMEWORKS, MXNET_ROLES, TF_ROLES, RoleSpec

__all__ = ["rank_order", "task_env"]

EnvFunction = Callable[[GangLayout, TaskSlot, World], dict[str, str]]

_ENV: dict[str, EnvFunction] = {
    "pytorch": pytorch.framework_env,
    "tensorflow": tensorflow.framework_env,
    "jax": jax.framework_env,
    "horovod": horovod.framework_env,
    "mxnet": mxnet.framework_env,
    "none": pytorch.framework_env,
}
#: Frameworks whose roles have a fixed order; the others keep the order they were declared in.
_FIXED_ORDER: dict[str, tuple[str, ...]] = {"tensorflow": TF_ROLES, "mxnet": MXNET_ROLES}


def _check(framework: str) -> None:
    if framework not in _ENV:
        raise ValueError(f"unknown framework {framework!r}: use one of {', '.join(FRAMEWORKS)}")


def rank_order(framework: str, roles: Sequence[RoleSpec]) -> list[RoleSpec]:
    """The roles in the order their tasks are laid out (the order of ``GangLayout.slots``).

    TensorFlow: chief, worker, ps, evaluator. MXNet: scheduler, server, worker. Others: the order
    of declaration, except that a role named ``chief`` or ``master`` comes first. Roles a
    framework does not know (the spec parser refuses them) keep their order, after the known ones.
    """
    _check(framework)
    fixed = _FIXED_ORDER.get(framework)
    if fixed is not None:
        known = len(fixed)
        return sorted(
            roles, key=lambda role: fixed.index(role.name) if role.name in fixed else known
        )
    return sorted(roles, key=lambda role: 0 if role.name in LEADER_ROLES else 1)


def task_env(layout: GangLayout, task_id: str) -> dict[str, str]:
    """Every variable the contract gives task ``task_id`` of ``layout``. Pure: no I/O.

    Raises ``KeyError`` for a task that is not in the layout and ``ValueError`` for an unknown
    framework.
    """
    _check(layout.framework)
    slot = layout.slot(task_id)
    world = World(layout)
    env = base_env(layout, slot, world)
    for name, value in _ENV[layout.framework](layout, slot, world).items():
        env.setdefault(name, value)
    return env
