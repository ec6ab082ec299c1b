"""The resolve step: a job spec plus a reservation -> the exact processes to start.

Pure but for the free ports the reservation hands out and ``os.environ``, both passed in.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cauce.cluster.api import GangRequest, Reservation, TaskLaunch, TaskRequest
from cauce.frameworks import (
    GangLayout,
    TaskSlot,
    contract_names,
    rank_order,
    task_env,
    thread_env,
)
from cauce.spec import JobSpec

__all__ = ["AttemptPlan", "build_attempt", "gang_request", "task_argv", "warm_launches"]


def gang_request(spec: JobSpec, job_id: str) -> GangRequest:
    """Every task of the gang, in rank order."""
    tasks = []
    for role in rank_order(spec.framework, spec.roles):
        for index in range(role.instances):
            tasks.append(
                TaskRequest(f"{role.name}-{index}", role.name, index, role.resources, role.tracked)
            )
    return GangRequest(job_id, tuple(tasks))


_UNQUOTED_SYNTAX = set("|&;<>()$`*?[]#~{}!\n")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _needs_shell(command: str) -> bool:
    """True if the shell would do more than split words: operators, expansions, globs..."""
    quote = ""
    escaped = False
    for ch in command:
        if escaped:
            escaped = False
        elif quote == "'":
            quote = "" if ch == "'" else quote
        elif ch == "\\":
            escaped = True
        elif quote == '"':
            if ch in "$`":
                return True
            quote = "" if ch == '"' else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _UNQUOTED_SYNTAX:
            return True
    return bool(_ASSIGNMENT.match(command.strip()))


def task_argv(command: str | tuple[str, ...]) -> tuple[str, ...]:
    """A list runs as it is. A string that is a plain command line (words and quotes only) is
    split and run directly, so that the task's exit code or signal is its own; a string with
    shell syntax (pipes, ``&&``, ``$VAR``, globs, redirections...) runs through ``/bin/sh -c``."""
    if not isinstance(command, str):
        return tuple(command)
    if not _needs_shell(command):
        try:
            return tuple(shlex.split(command))
        except ValueError:
            pass
    return ("/bin/sh", "-c", command)


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


def _inherited(environ: Mapping[str, str]) -> dict[str, str]:
    """What a task inherits of the driver's environment: :func:`base_env` without the names
    the frameworks' contract sets (a stale ``RANK`` of the driver's must not leak in)."""
    return {k: v for k, v in base_env(environ).items() if k not in contract_names()}


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
    progress_dir: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    chief_env: Mapping[str, str] | None = None,
) -> AttemptPlan:
    """``extra_env`` is set for every task after the contract (the driver's own variables,
    such as a trial's ``CAUCE_PARAMS``) and before the spec's ``env``; ``chief_env`` likewise,
    for the chief only (the task whose ``IS_CHIEF`` is true: TonY's ``TB_PORT``)."""
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
    inherited = _inherited(environ)
    launches = []
    contract: dict[str, dict[str, str]] = {}
    for task in request.tasks:
        role = spec.role(task.role)
        mine = dict(task_env(layout, task.task_id))
        if progress_dir is not None:
            mine["CAUCE_PROGRESS_FILE"] = os.path.join(progress_dir, f"{task.task_id}.jsonl")
        mine.update(extra_env or {})
        if mine.get("IS_CHIEF") == "true":
            mine.update(chief_env or {})
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
                preload=spec.preload,
            )
        )
    return AttemptPlan(layout, tuple(launches), contract)


def warm_launches(spec: JobSpec, environ: Mapping[str, str]) -> list[TaskLaunch]:
    """Before any attempt is planned, what each role of ``spec`` will ask of the warm starts
    (``preload:``): its command, folder, and the environment its imports see (the driver's, the
    thread counts of its CPUs, the spec's and the role's ``env``), for
    :meth:`~cauce.cluster.WarmStarts.prestart`. Empty when nothing is preloaded."""
    if not spec.preload:
        return []
    inherited = _inherited(environ)
    launches = []
    for role in spec.roles:
        env = {**inherited, **thread_env(role.resources.cpus)}
        env.update(spec.env)
        env.update(role.env)
        launches.append(
            TaskLaunch(
                task_id=role.name,
                argv=task_argv(spec.command_for(role)),
                env=env,
                cwd=spec.workdir,
                log_path=os.devnull,
                preload=spec.preload,
            )
        )
    return launches
