"""Horovod with its Gloo controller, as ``horovodrun --gloo`` starts it.

Each task gets the numbers ``horovod.runner.gloo_run`` gives its slots (rank, size, local and
cross ranks, computed as ``get_host_assignments`` does) and the address of the HTTP key-value
store its Gloo contexts meet at (``HOROVOD_GLOO_RENDEZVOUS_ADDR``/``_PORT``). The store is served
by the cauce driver (:mod:`cauce.frameworks._horovod_kv`) and named in ``GangLayout.rendezvous``.
"""

from __future__ import annotations

from cauce.frameworks._common import World, master_slot, torch_env
from cauce.frameworks.api import Framework, GangLayout, TaskSlot

__all__ = ["FRAMEWORK", "GLOO_TIMEOUT_SECONDS", "framework_env", "rendezvous_address"]

#: Seconds a Gloo rendezvous or collective waits for its peers (Horovod's default is 30, short
#: for tasks that spend that long importing a framework on a busy machine).
GLOO_TIMEOUT_SECONDS = 120


def rendezvous_address(layout: GangLayout, world: World) -> tuple[str, int]:
    """Host and port of the Gloo key-value store: ``layout.rendezvous``, else world rank 0's."""
    if layout.rendezvous:
        host, sep, port = layout.rendezvous.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(
                f"GangLayout.rendezvous must be 'host:port', got {layout.rendezvous!r}"
            )
        return host.strip("[]"), int(port)
    master = master_slot(layout, world)
    return master.host, master.port


def framework_env(layout: GangLayout, slot: TaskSlot, world: World) -> dict[str, str]:
    """``HOROVOD_*`` for a world task, plus torchrun's variables; nothing outside the world."""
    if world.rank(slot.task_id) < 0:
        return {}
    where = world.placement(slot)
    host, port = rendezvous_address(layout, world)
    env = torch_env(layout, slot, world)
    env.update(
        {
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": host,
            "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
            "HOROVOD_CONTROLLER": "gloo",
            "HOROVOD_CPU_OPERATIONS": "gloo",
            "HOROVOD_GLOO_TIMEOUT_SECONDS": str(GLOO_TIMEOUT_SECONDS),
            "HOROVOD_HOSTNAME": slot.host,
            "HOROVOD_RANK": str(where.rank),
            "HOROVOD_SIZE": str(world.size),
            "HOROVOD_LOCAL_RANK": str(where.local_rank),
            "HOROVOD_LOCAL_SIZE": str(where.local_size),
            "HOROVOD_CROSS_RANK": str(where.cross_rank),
            "HOROVOD_CROSS_SIZE": str(where.cross_size),
        }
    )
    return env


FRAMEWORK = Framework("horovod", env=framework_env)
