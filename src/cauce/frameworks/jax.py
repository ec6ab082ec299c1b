"""JAX: the settings of ``jax.distributed.initialize``, under cauce's names and Kubeflow's.

jax 0.10 reads only ``JAX_COORDINATOR_ADDRESS`` from the environment; without a cluster it knows
(SLURM, Open MPI, Kubernetes, ...) it cannot guess the number of processes or this process's id.
So the task passes ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` itself, or calls
:func:`initialize`, which does exactly that::

    from cauce.frameworks.jax import initialize
    initialize()   # = jax.distributed.initialize(address, num_processes, process_id)

Scripts written for Kubeflow's JAXJob read the same settings under the names the Training
Operator gives (``pkg/controller.v1/jax/envvar.go`` in kubeflow/training-operator v1.9.0):
``COORDINATOR_ADDRESS`` (a host), ``COORDINATOR_PORT``, ``NUM_PROCESSES`` and ``PROCESS_ID``.
"""

from __future__ import annotations

import os
from typing import Any

from cauce.frameworks._common import World, host_port, master_slot
from cauce.frameworks.api import Framework, GangLayout, TaskSlot

__all__ = ["FRAMEWORK", "framework_env", "initialize"]


def framework_env(layout: GangLayout, slot: TaskSlot, world: World) -> dict[str, str]:
    """The coordinator (world rank 0's address), the number of processes and this one's id,
    under cauce's ``JAX_*`` names and Kubeflow's JAXJob names."""
    rank = world.rank(slot.task_id)
    if rank < 0:
        return {}
    coordinator = master_slot(layout, world)
    address = host_port(coordinator.host, coordinator.port)
    return {
        "JAX_COORDINATOR_ADDRESS": address,
        "JAX_NUM_PROCESSES": str(world.size),
        "JAX_PROCESS_ID": str(rank),
        # Kubeflow's JAXJob: the host alone (an IPv6 literal in brackets, so that the
        # f"{COORDINATOR_ADDRESS}:{COORDINATOR_PORT}" of its examples is an address), the port.
        "COORDINATOR_ADDRESS": address.rsplit(":", 1)[0],
        "COORDINATOR_PORT": str(coordinator.port),
        "NUM_PROCESSES": str(world.size),
        "PROCESS_ID": str(rank),
    }


FRAMEWORK = Framework("jax", env=framework_env)


def initialize(**kwargs: Any) -> None:
    """Call ``jax.distributed.initialize`` with the three settings cauce put in the environment.

    Extra keyword arguments (``initialization_timeout``, ``local_device_ids``, ...) are passed on.
    Raises ``RuntimeError`` when the task was not started by cauce with framework ``jax``.
    """
    missing = [
        name
        for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
        if not os.environ.get(name)
    ]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not set: run this task with cauce and 'framework: jax'"
        )
    import jax

    jax.distributed.initialize(
        coordinator_address=os.environ["JAX_COORDINATOR_ADDRESS"],
        num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
        process_id=int(os.environ["JAX_PROCESS_ID"]),
        **kwargs,
    )
