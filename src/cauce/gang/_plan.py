"""The resolve step: a job spec plus a reservation -> the exact processes to start.

Pure but for the free ports the reservation hands out and ``os.environ``, both passed in.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cauce.cluster.api import GangRequest, Reservation, TaskLaunch, TaskRequest
from cauce.frameworks import rank_order, task_env
from cauce.frameworks.api import GangLayout, TaskSlot
from cauce.spec import JobSpec

__all__ = ["AttemptPlan", "build_attempt", "gang_request", "task_argv"]


def gang_request(spec: JobSpec, job_id: str) -> GangRequest:
    """Every task of the gang, in rank order."""
    tasks = []
    for role in rank_order(spec.framework, spec.roles):
        for index in range(role.instances):
            tasks.append(
                TaskRequest(f"{role.name}-{index}", role.name, index, role.resources, role.tracked)
            )
    return GangRequest(job_id, tuple(tasks))


def task_argv(command: str | tuple[str, ...]) -> tuple[str, ...]:
    """A string runs through ``/bin/sh -c``; a list runs as it is."""
    if isinstance(command, str):
        return ("/bin/sh", "-c", command)
    return tuple(command)


def base_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The driver's environment, with this Python's bin folder first on PATH so that ``python``
    in a command is the interpreter cauce runs in, and unbuffered output for live logs."""
    env = dict(environ)
    bindir = os.path.dirname(sys.executable)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[:1] != [bindir]:
        env["PATH"] = bindir + (os.pathsep + path if path else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass(frozen=True)
class AttemptPlan:
    layout: GangLayout
    launches: tuple[TaskLaunch, ...]
    #: task_id -> the variables cauce sets (contract plus the spec's env), for --dry-run
    contract: Mapping[str, Mapping[str, str]]


def build_attempt(
    spec: JobSpec,
    request: GangRequest,
    reservation: Reservation,
    *,
    job_id: str,
    attempt: int,
    log_dir: str,
    environ: Mapping[str, str],
    rendezvous: str | None = None,
    ports: Mapping[str, int] | None = None,
) -> AttemptPlan:
    task_ids: Sequence[str] = [task.task_id for task in request.tasks]
    ports = ports if ports is not None else reservation.ports(task_ids)
    slots = []
    for task in request.tasks:
        host, gpus = reservation.placements[task.task_id]
        slots.append(
            TaskSlot(
                task_id=task.task_id,
                role=task.role,
                index=task.index,
                host=host,
                port=ports[task.task_id],
                gpus=gpus,
                cpus=task.resources.cpus,
                tracked=task.tracked,
            )
        )
    layout = GangLayout(
        job_id=job_id,
        job_name=spec.name,
        framework=spec.framework,
        attempt=attempt,
        max_restarts=spec.restart.max_restarts,
        slots=tuple(slots),
        rendezvous=rendezvous,
    )
    inherited = base_env(environ)
    launches = []
    contract: dict[str, dict[str, str]] = {}
    for task in request.tasks:
        role = spec.role(task.role)
        mine = dict(task_env(layout, task.task_id))
        mine.update(spec.env)
        mine.update(role.env)
        contract[task.task_id] = mine
        launches.append(
            TaskLaunch(
                task_id=task.task_id,
                argv=task_argv(spec.command_for(role)),
                env={**inherited, **mine},
                cwd=spec.workdir,
                log_path=os.path.join(log_dir, f"{task.task_id}.log"),
            )
        )
    return AttemptPlan(layout, tuple(launches), contract)
