"""How a trial's parameters reach its tasks. Pure: a job spec and values in, a job spec out.

Three ways, all set for every trial: ``cauce.context().params`` (the driver's ``CAUCE_PARAMS``),
one variable per parameter (``CAUCE_PARAM_LR=0.01``) and ``{lr}`` in the command, replaced by
the value (shell-quoted in a command string; one list item stays one argument).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import replace

from cauce.frameworks import rank_order
from cauce.spec import JobSpec, RoleSpec, TuneSpec

__all__ = ["format_value", "objective_task", "substitute", "trial_spec"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Roles whose tasks do not train (their reports, if any, are not the objective by default).
_SERVICE_ROLES = ("scheduler", "server", "ps", "evaluator")


def format_value(value: object) -> str:
    """A parameter value as text: ``0.001``, ``32``, ``adam``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def substitute(
    command: str | tuple[str, ...], params: Mapping[str, object]
) -> str | tuple[str, ...]:
    """Replace ``{name}`` by the value of parameter ``name``; other braces are left alone."""

    def replace_in(text: str, quote: bool) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in params:
                return match.group(0)
            value = format_value(params[name])
            return shlex.quote(value) if quote else value

        return _PLACEHOLDER.sub(one, text)

    if isinstance(command, str):
        return replace_in(command, quote=True)
    return tuple(replace_in(part, quote=False) for part in command)


def trial_spec(spec: JobSpec, tune: TuneSpec, params: Mapping[str, object]) -> JobSpec:
    """The job one trial runs: commands with the values in place and ``CAUCE_PARAM_*`` set.
    The ``tune`` section is dropped: a trial is a plain job."""
    env = tuple(
        (param.env_name, format_value(params[param.name]))
        for param in tune.space
        if param.name in params
    )
    # The driver passes its ``params`` as CAUCE_PARAMS too, but the resolve step drops that
    # name from the inherited environment; set through the spec, it reaches every task.
    env += (("CAUCE_PARAMS", json.dumps(dict(params), default=str)),)
    names = {name for name, _ in env}
    if tune.entrypoint is not None:  # a function: run where no worker is (--cluster spark...)
        call = ("python", "-m", "cauce.runtime._worker", tune.entrypoint)
        spec = replace(
            spec, command=call, roles=tuple(replace(r, command=None) for r in spec.roles)
        )
    roles: list[RoleSpec] = []
    for role in spec.roles:
        command = substitute(role.command, params) if role.command is not None else None
        roles.append(replace(role, command=command))
    return replace(
        spec,
        command=substitute(spec.command, params) if spec.command is not None else None,
        roles=tuple(roles),
        env=tuple(item for item in spec.env if item[0] not in names) + env,
        tune=None,
    )


def objective_task(spec: JobSpec, tune: TuneSpec) -> str:
    """The task whose reports are the objective: ``objective.task``, else the first training
    task in rank order (``worker-0``, or ``chief-0`` for TensorFlow)."""
    if tune.objective.task is not None:
        return tune.objective.task
    ordered = rank_order(spec.framework, spec.roles)
    for role in ordered:
        if role.name not in _SERVICE_ROLES:
            return f"{role.name}-0"
    return f"{ordered[0].name}-0"
