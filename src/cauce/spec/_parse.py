"""Turn a YAML job file (or a dict) into a validated :class:`JobSpec`.

Every refusal is a :class:`SpecError` whose message names the field path, the value and the fix.
Unknown keys are refused by name, with the closest known key suggested.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cauce._util.yamlfile import load_yaml_file
from cauce.errors import SpecError
from cauce.spec._tune import parse_tune
from cauce.spec._types import JobSpec, Resources, RestartPolicy, RoleSpec, TensorBoardSpec
from cauce.spec._values import (
    MAX_COUNT,
    MAX_CPUS,
    MAX_GPUS,
    MAX_INSTANCES,
    MAX_MEMORY,
    MAX_PAUSE,
    MAX_SECONDS,
    cluster_problem,
    integer_problem,
    number_problem,
    short_repr,
    text_problem,
)

if TYPE_CHECKING:
    from cauce.frameworks import Framework

_JOB_KEYS = (
    "name",
    "framework",
    "command",
    "roles",
    "env",
    "workdir",
    "restart",
    "timeout",
    "hang_timeout",
    "grace_period",
    "cluster",
    "tune",
    "spark",
    "tensorboard",
)
_ROLE_KEYS = ("instances", "command", "resources", "env", "tracked")
_RESOURCE_KEYS = ("cpus", "memory", "gpus")
_RESTART_KEYS = ("max_restarts", "backoff", "max_backoff")
#: Cluster addresses a spec may name (besides "local").
CLUSTER_PREFIXES = ("spark://", "local[", "yarn", "k8s://")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_ROLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SPARK_KEY_RE = re.compile(r"^spark\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
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


def load_job(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a job file. Relative ``workdir`` is taken from the file's folder."""
    file = Path(path)
    data = load_yaml_file(file, what="job file")
    return parse_job(data, source=str(file), base_dir=file.resolve().parent)


def parse_job(
    data: object, *, source: str = "", base_dir: str | os.PathLike[str] | None = None
) -> JobSpec:
    """Validate a job given as a mapping (the parsed YAML)."""
    p = _Parser(source)
    if not isinstance(data, Mapping):
        raise p.error("", f"must be a mapping of job fields, got {_kind(data)}")
    p.check_keys(data, _JOB_KEYS, "")

    name = data.get("name")
    if name is None:
        stem = Path(source).stem if source else "job"
        if not _NAME_RE.match(stem):
            raise p.error(
                "name",
                f"is not set and the file name {short_repr(stem)} is not a valid job name: add "
                "name: with 1-63 letters, digits, '.', '_' or '-'",
            )
        name = stem
    name = p.string(name, "name")
    if not _NAME_RE.match(name):
        raise p.error(
            "name",
            f"must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit, "
            f"got {short_repr(name)}",
        )

    # The one upward import of spec/: the framework registry owns the frameworks' names and
    # roles, and the boundary checks a job against it. Late, so that frameworks/ may import spec.
    from cauce.frameworks import FRAMEWORKS, get_framework

    framework = p.string(data.get("framework", "none"), "framework")
    if framework not in FRAMEWORKS:
        raise p.error(
            "framework", f"must be one of {', '.join(FRAMEWORKS)}, got {short_repr(framework)}"
        )

    command = p.command(data.get("command"), "command") if "command" in data else None
    env = p.env(data.get("env"), "env")
    workdir = p.string(data.get("workdir", "."), "workdir")
    if base_dir is not None and not os.path.isabs(workdir):
        workdir = os.path.normpath(os.path.join(os.fspath(base_dir), workdir))
    restart = p.restart(data.get("restart"), "restart")
    timeout = (
        p.positive_number(data["timeout"], "timeout") if data.get("timeout") is not None else None
    )
    hang = (
        p.positive_number(data["hang_timeout"], "hang_timeout")
        if "hang_timeout" in data and data["hang_timeout"] is not None
        else None
    )
    grace = p.number(data.get("grace_period", 10.0), "grace_period", minimum=0.0)
    cluster = p.cluster(data["cluster"]) if data.get("cluster") is not None else None
    spark = spark_settings(data.get("spark"), "spark", source)
    tensorboard = p.tensorboard(data["tensorboard"], base_dir) if "tensorboard" in data else None

    roles = p.roles(data.get("roles"), get_framework(framework))
    p.gang_size(roles)
    for role in roles:
        if role.command is None and command is None:
            raise p.error(
                f"roles.{role.name}.command",
                "is missing: give a top-level 'command' or one per role",
            )
    tune = None
    if data.get("tune") is not None:
        task_ids = [f"{role.name}-{i}" for role in roles for i in range(role.instances)]
        tune = parse_tune(data["tune"], task_ids=task_ids, source=source)
    return JobSpec(
        name=name,
        framework=framework,
        roles=roles,
        command=command,
        env=env,
        workdir=workdir,
        restart=restart,
        timeout=timeout,
        hang_timeout=hang,
        grace_period=grace,
        cluster=cluster,
        source=source,
        tune=tune,
        spark=spark,
        tensorboard=tensorboard,
    )


def parse_memory(value: object, path: str = "memory", source: str = "") -> int:
    """``"4GiB"``, ``"512M"``, ``2000000`` -> bytes."""
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


def spark_conf_pairs(options: Sequence[str], environ: str | None) -> dict[str, str]:
    """``$CAUCE_SPARK_CONF`` (KEY=VALUE pairs, quoted as in a shell), then ``--conf`` options,
    as checked Spark settings; later ones win."""
    try:
        from_env = shlex.split(environ or "")
    except ValueError as exc:
        raise SpecError(
            "$CAUCE_SPARK_CONF", f"cannot be split into KEY=VALUE pairs: {exc}"
        ) from None
    pairs = [("$CAUCE_SPARK_CONF", pair) for pair in from_env]
    pairs += [("--conf", pair) for pair in options]
    merged: dict[str, str] = {}
    for where, pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SpecError(
                where, f"must be KEY=VALUE, like spark.executor.memory=4g, got {short_repr(pair)}"
            )
        [(key, value)] = spark_settings({key.strip(): value}, where)
        merged[key] = value
    return merged


def with_spark_conf(spec: JobSpec, options: Sequence[str], environ: str | None) -> JobSpec:
    """The spec with ``$CAUCE_SPARK_CONF`` then ``--conf`` settings over its ``spark:``."""
    extra = spark_conf_pairs(options, environ)
    return replace(spec, spark=tuple({**dict(spec.spark), **extra}.items())) if extra else spec


def spark_settings(
    value: object, path: str = "spark", source: str = ""
) -> tuple[tuple[str, str], ...]:
    """A mapping of Spark settings (``spark.executor.memory: 4g``) -> ``(key, text)`` pairs.

    Keys must look like ``spark.*``; values are strings, numbers or booleans (``true``/``false``).
    """
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise SpecError(
            path,
            f"must be a mapping of Spark settings like {{spark.executor.memory: 4g}}, "
            f"got {_kind(value)}",
            value=value,
            source=source,
        )
    out: list[tuple[str, str]] = []
    for key, item in value.items():
        if not isinstance(key, str) or not _SPARK_KEY_RE.match(key):
            raise SpecError(
                path,
                f"key {short_repr(key)} is not a Spark setting: keys start with 'spark.', like "
                "spark.executor.memory",
                value=key,
                source=source,
            )
        if isinstance(item, bool):
            item = "true" if item else "false"
        if not isinstance(item, str | int | float):
            raise SpecError(
                path,
                f"{key} must be a string or number, got {_kind(item)}",
                value=item,
                source=source,
            )
        out.append((key, str(item)))
    return tuple(out)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, message: str, value: object = None) -> SpecError:
        return SpecError(path, message, value=value, source=self.source)

    def check_keys(self, data: Mapping[Any, Any], known: tuple[str, ...], path: str) -> None:
        for key in data:
            if key not in known:
                where = f"{path}.{key}" if path else str(key)
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.error(
                    where, f"is not a known field; {hint}known fields: {', '.join(known)}"
                )

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
                "tensorboard", f"must be a mapping like {{logdir: tb}}, got {_kind(value)}", value
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

    def cluster(self, value: object) -> str:
        address = self.string(value, "cluster")
        problem = cluster_problem(address)
        if problem:
            raise self.error("cluster", problem, address)
        return address

    def number(
        self, value: object, path: str, *, minimum: float, maximum: float = MAX_PAUSE
    ) -> float:
        problem = number_problem(value, minimum=minimum, maximum=maximum, unit=" seconds")
        if problem:
            raise self.error(path, problem, value)
        return float(value)  # type: ignore[arg-type]

    def positive_number(
        self, value: object, path: str, unit: str = " seconds", maximum: float = MAX_SECONDS
    ) -> float:
        problem = number_problem(value, above=0, maximum=maximum, unit=unit)
        if problem:
            raise self.error(path, problem, value)
        return float(value)  # type: ignore[arg-type]

    def integer(self, value: object, path: str, *, minimum: int, maximum: int = MAX_COUNT) -> int:
        problem = integer_problem(value, minimum=minimum, maximum=maximum)
        if problem:
            raise self.error(path, problem, value)
        return value  # type: ignore[return-value]

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
            raise self.error(path, f"must be a mapping of NAME: value, got {_kind(value)}", value)
        out: list[tuple[str, str]] = []
        for key, item in value.items():
            if not isinstance(key, str) or not _ENV_RE.match(key):
                raise self.error(f"{path}.{key}", "is not a valid environment variable name", key)
            if isinstance(item, bool):
                item = "1" if item else "0"
            if not isinstance(item, str | int | float):
                raise self.error(
                    f"{path}.{key}", f"must be a string or number, got {_kind(item)}", item
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
        return RestartPolicy(
            max_restarts=self.integer(
                value.get("max_restarts", 0), f"{path}.max_restarts", minimum=0
            ),
            backoff=self.number(value.get("backoff", 1.0), f"{path}.backoff", minimum=0.0),
            max_backoff=self.number(
                value.get("max_backoff", 60.0), f"{path}.max_backoff", minimum=0.0
            ),
        )

    def resources(self, value: object, path: str) -> Resources:
        if value is None:
            return Resources()
        if not isinstance(value, Mapping):
            raise self.error(
                path,
                "must be a mapping like {cpus: 1, memory: 2GiB, gpus: 0}, got "
                f"{short_repr(value)}",
            )
        self.check_keys(value, _RESOURCE_KEYS, path)
        cpus = self.positive_number(
            value.get("cpus", 1),
            f"{path}.cpus",
            unit=" (fractions like 0.5 are allowed)",
            maximum=MAX_CPUS,
        )
        memory = parse_memory(value.get("memory", 0), f"{path}.memory", self.source)
        gpus = self.integer(value.get("gpus", 0), f"{path}.gpus", minimum=0, maximum=MAX_GPUS)
        return Resources(cpus=cpus, memory=memory, gpus=gpus)

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
            instances = self.integer(body.get("instances", 1), f"{path}.instances", minimum=1)
            command = (
                self.command(body["command"], f"{path}.command") if "command" in body else None
            )
            tracked = body.get("tracked", name not in framework.untracked)
            if not isinstance(tracked, bool):
                raise self.error(
                    f"{path}.tracked", f"must be true or false, got {short_repr(tracked)}"
                )
            roles.append(
                RoleSpec(
                    name=name,
                    instances=instances,
                    command=command,
                    resources=self.resources(body.get("resources"), f"{path}.resources"),
                    env=self.env(body.get("env"), f"{path}.env"),
                    tracked=tracked,
                )
            )
        for path, message in framework.check_roles(roles)[:1]:
            raise self.error(path, message)
        if not any(role.tracked for role in roles):
            raise self.error(
                "roles", "has no tracked role: the job would never finish; set tracked: true"
            )
        return tuple(roles)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {short_repr(value)}"
