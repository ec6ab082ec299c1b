"""The fields of a job spec: names, commands, env, the restart policy, resources and roles."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

from cauce.errors import SpecError
from cauce.spec._types import Resources, RestartPolicy, RoleSpec, TensorBoardSpec
from cauce.spec._values import (
    MAX_CPUS,
    MAX_GPUS,
    MAX_INSTANCES,
    MAX_MEMORY,
    MAX_PAUSE,
    MAX_SECONDS,
    FieldParser,
    cluster_problem,
    kind_of,
    number_problem,
    short_repr,
    text_problem,
)

if TYPE_CHECKING:
    from cauce.frameworks import Framework

__all__ = ["JobParser", "parse_memory"]

_ROLE_KEYS = ("instances", "command", "resources", "env", "tracked")
_RESOURCE_KEYS = ("cpus", "memory", "gpus")
_RESTART_KEYS = ("max_restarts", "backoff", "max_backoff", "never_on")
_ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "ki": 2**10,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mi": 2**20,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gi": 2**30,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "ti": 2**40,
    "tib": 2**40,
}


def parse_memory(value: object, path: str = "memory", source: str = "", *, unset: str = "") -> int:
    """``"4GiB"``, ``"512M"``, ``2000000`` -> bytes. With ``unset`` (what leaving the field out
    does, "to ..."), a size under one byte is refused: it would read as not stated."""
    size = _memory(value, path, source)
    if unset and size < 1:
        raise SpecError(
            path,
            f"must be at least 1 byte, got {short_repr(value)}; leave it out {unset}",
            value=value,
            source=source,
        )
    return size


def _memory(value: object, path: str, source: str) -> int:
    if isinstance(value, bool):
        raise SpecError(
            path, f"must be a size like 4GiB or 512MiB, got {short_repr(value)}", source=source
        )
    if isinstance(value, int | float):
        problem = number_problem(value, minimum=0, maximum=MAX_MEMORY, unit=" bytes")
        if problem:
            raise SpecError(path, problem, value=value, source=source)
        return int(value)
    if isinstance(value, str):
        match = _MEMORY_RE.match(value)
        if match:
            unit = (match.group(2) or "").lower()
            size = float(match.group(1)) * _UNITS[unit]
            if size > MAX_MEMORY:
                raise SpecError(
                    path,
                    f"must be at most 1 EiB, got {short_repr(value)}",
                    value=value,
                    source=source,
                )
            return int(size)
    raise SpecError(
        path,
        f"must be a size like 4GiB, 512MiB or a number of bytes, got {short_repr(value)}",
        value=value,
        source=source,
    )


class JobParser(FieldParser):
    """The fields of a job: names, commands, env, restart policy, resources, roles."""

    def string(self, value: object, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.error(path, f"must be a non-empty string, got {short_repr(value)}", value)
        return self.text(value, path)

    def text(self, value: str, path: str) -> str:
        problem = text_problem(value)
        if problem:
            raise self.error(path, problem, value)
        return value

    def tensorboard(
        self, value: object, base_dir: str | os.PathLike[str] | None
    ) -> TensorBoardSpec:
        """``tensorboard: {logdir: PATH, report: BOOL}``, both optional; a relative logdir
        starts at the job file's folder."""
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise self.error(
                "tensorboard", f"must be a mapping like {{logdir: tb}}, got {kind_of(value)}", value
            )
        self.check_keys(value, ("logdir", "report"), "tensorboard")
        logdir = value.get("logdir")
        if logdir is not None:
            logdir = self.string(logdir, "tensorboard.logdir")
            if "://" in logdir:
                raise self.error(
                    "tensorboard.logdir",
                    f"must be a folder path (shared by every host of the cluster), got "
                    f"{short_repr(logdir)}",
                    logdir,
                )
            if base_dir is not None and not os.path.isabs(logdir):
                logdir = os.path.normpath(os.path.join(os.fspath(base_dir), logdir))
        report = value.get("report", False)
        if not isinstance(report, bool):
            raise self.error(
                "tensorboard.report", f"must be true or false, got {short_repr(report)}", report
            )
        return TensorBoardSpec(logdir=logdir, report=report)

    def preload(self, value: object) -> tuple[str, ...]:
        """``preload: [torch, numpy]``: the modules of a warm start, each named once."""
        if not isinstance(value, list) or not value:
            raise self.error(
                "preload",
                f"must be a list of module names like [torch, numpy], got {short_repr(value)}",
                value,
            )
        for i, name in enumerate(value):
            if not isinstance(name, str) or not _MODULE_RE.fullmatch(name):
                raise self.error(
                    f"preload[{i}]",
                    f"must be a module name like torch or sklearn.ensemble, got {short_repr(name)}",
                    name,
                )
        return tuple(dict.fromkeys(value))

    def cluster(self, value: object) -> str:
        address = self.string(value, "cluster")
        problem = cluster_problem(address)
        if problem:
            raise self.error("cluster", problem, address)
        return address

    def number(
        self, value: object, path: str, *, minimum: float, maximum: float = MAX_PAUSE
    ) -> float:
        return self.duration(value, path, minimum=minimum, maximum=maximum)

    def positive_number(
        self, value: object, path: str, unit: str = " seconds", maximum: float = MAX_SECONDS
    ) -> float:
        return self.real(value, path, above=0, maximum=maximum, unit=unit)

    def command(self, value: object, path: str) -> str | tuple[str, ...]:
        if isinstance(value, str) and value.strip():
            return self.text(value, path)
        if (
            isinstance(value, list)
            and value
            and all(isinstance(part, str | int | float) for part in value)
        ):
            return tuple(
                ("true" if part else "false")
                if isinstance(part, bool)
                else self.text(str(part), path)
                for part in value
            )
        raise self.error(
            path,
            "must be a shell command string or a non-empty list of arguments, got "
            f"{short_repr(value)}",
            value,
        )

    def env(self, value: object, path: str) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            raise self.error(path, f"must be a mapping of NAME: value, got {kind_of(value)}", value)
        out: list[tuple[str, str]] = []
        for key, item in value.items():
            if not isinstance(key, str) or not _ENV_RE.match(key):
                raise self.error(f"{path}.{key}", "is not a valid environment variable name", key)
            if isinstance(item, bool):
                item = "1" if item else "0"
            if not isinstance(item, str | int | float):
                raise self.error(
                    f"{path}.{key}", f"must be a string or number, got {kind_of(item)}", item
                )
            out.append((key, self.text(str(item), f"{path}.{key}")))
        return tuple(out)

    def gang_size(self, roles: Sequence[RoleSpec]) -> None:
        """A gang is placed all at once: one too large can never fit; refuse it now."""
        for role in roles:
            if role.instances > MAX_INSTANCES:
                raise self.error(
                    f"roles.{role.name}.instances",
                    f"must be <= {MAX_INSTANCES}: a gang of {role.instances} tasks can never "
                    "be placed at once",
                    role.instances,
                )
        total = sum(role.instances for role in roles)
        if total > MAX_INSTANCES:
            raise self.error(
                "roles",
                f"add up to {total} tasks, more than {MAX_INSTANCES}: a gang this large can "
                "never be placed at once",
            )

    def restart(self, value: object, path: str) -> RestartPolicy:
        if value is None:
            return RestartPolicy()
        if not isinstance(value, Mapping):
            raise self.error(
                path,
                f"must be a mapping like {{max_restarts: 2, backoff: 5}}, got {short_repr(value)}",
            )
        self.check_keys(value, _RESTART_KEYS, path)
        default = RestartPolicy()
        return RestartPolicy(
            max_restarts=self.collect(
                partial(
                    self.integer, value.get("max_restarts", 0), f"{path}.max_restarts", minimum=0
                ),
                default.max_restarts,
            ),
            backoff=self.collect(
                partial(self.number, value.get("backoff", 1.0), f"{path}.backoff", minimum=0.0),
                default.backoff,
            ),
            max_backoff=self.collect(
                partial(
                    self.number, value.get("max_backoff", 60.0), f"{path}.max_backoff", minimum=0.0
                ),
                default.max_backoff,
            ),
            never_on=self.collect(
                partial(self.exit_codes, value.get("never_on", [126, 127]), f"{path}.never_on"),
                default.never_on,
            ),
        )

    def exit_codes(self, value: object, path: str) -> tuple[int, ...]:
        """A list of exit codes (1-255), like ``[2, 126, 127]``."""
        if not isinstance(value, list):
            raise self.error(
                path, f"must be a list of exit codes like [2, 126, 127], got {kind_of(value)}"
            )
        return tuple(
            self.integer(code, f"{path}[{i}]", minimum=1, maximum=255)
            for i, code in enumerate(value)
        )

    def resources(self, value: object, path: str) -> Resources:
        if value is None:
            return Resources(cpus_declared=False)
        if not isinstance(value, Mapping):
            raise self.error(
                path,
                "must be a mapping like {cpus: 1, memory: 2GiB, gpus: 0}, got "
                f"{short_repr(value)}",
            )
        self.check_keys(value, _RESOURCE_KEYS, path)
        cpus = self.collect(
            partial(
                self.positive_number,
                value.get("cpus", 1),
                f"{path}.cpus",
                unit=" (fractions like 0.5 are allowed)",
                maximum=MAX_CPUS,
            ),
            1.0,
        )
        memory = self.collect(
            partial(
                parse_memory,
                value.get("memory", 0),
                f"{path}.memory",
                self.source,
                unset="to state none" if "memory" in value else "",
            ),
            0,
        )
        gpus = self.collect(
            partial(
                self.integer, value.get("gpus", 0), f"{path}.gpus", minimum=0, maximum=MAX_GPUS
            ),
            0,
        )
        return Resources(cpus=cpus, memory=memory, gpus=gpus, cpus_declared="cpus" in value)

    def roles(self, value: object, framework: Framework) -> tuple[RoleSpec, ...]:
        if value is None:
            value = {"worker": {}}
        if not isinstance(value, Mapping) or not value:
            raise self.error(
                "roles",
                f"must be a mapping of role name to role, like {{worker: {{instances: 2}}}}, "
                f"got {short_repr(value)}",
            )
        roles: list[RoleSpec] = []
        for name, body in value.items():
            role = self.collect(partial(self.role, name, body, framework), None)
            if role is not None:
                roles.append(role)
        if len(roles) < len(value):
            return tuple(roles)  # checks of the whole would only repeat the roles' mistakes
        for path, message in framework.check_roles(roles)[:1]:  # the others follow from it
            raise self.error(path, message)
        if not any(role.tracked for role in roles):
            raise self.error(
                "roles", "has no tracked role: the job would never finish; set tracked: true"
            )
        return tuple(roles)

    def role(self, name: object, body: object, framework: Framework) -> RoleSpec:
        path = f"roles.{name}"
        if not isinstance(name, str) or not _ROLE_RE.match(name):
            raise self.error(
                path,
                "is not a valid role name: use lower-case letters, digits and '_', "
                "starting with a letter",
            )
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise self.error(
                path, f"must be a mapping like {{instances: 2}}, got {short_repr(body)}", body
            )
        self.check_keys(body, _ROLE_KEYS, path)
        instances = self.collect(
            partial(self.integer, body.get("instances", 1), f"{path}.instances", minimum=1), 1
        )
        command = None
        if "command" in body:
            command = self.collect(partial(self.command, body["command"], f"{path}.command"), None)
        tracked = body.get("tracked", name not in framework.untracked)
        if not isinstance(tracked, bool):
            self.refuse(
                self.error(f"{path}.tracked", f"must be true or false, got {short_repr(tracked)}")
            )
            tracked = True
        no_env: tuple[tuple[str, str], ...] = ()
        return RoleSpec(
            name=name,
            instances=instances,
            command=command,
            resources=self.collect(
                partial(self.resources, body.get("resources"), f"{path}.resources"),
                Resources(cpus_declared=False),
            ),
            env=self.collect(partial(self.env, body.get("env"), f"{path}.env"), no_env),
            tracked=tracked,
        )
