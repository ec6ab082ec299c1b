"""Turn a YAML job file (or a dict) into a validated :class:`JobSpec`.

Every refusal is a :class:`SpecError` whose message names the field path, the value and the fix.
Unknown keys are refused by name, with the closest known key suggested.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cauce._util.yamlfile import load_yaml_file, locate
from cauce.errors import SpecError
from cauce.spec._sections import JobParser
from cauce.spec._spark import spark_settings
from cauce.spec._tracking import parse_tracking
from cauce.spec._tune_parse import TUNE_KEYS, parse_tune
from cauce.spec._types import JobSpec, RestartPolicy, RoleSpec
from cauce.spec._values import kind_of, short_repr

__all__ = ["load_job", "parse_job"]

#: Keys of a study written at the top of a job file, with the section they belong under.
_ELSEWHERE = {
    **dict.fromkeys(TUNE_KEYS, "tune"),
    "metric": "tune.objective",
    "direction": "tune.objective",
}

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
    "tracking",
    "preload",
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def load_job(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a job file. Relative ``workdir`` is taken from the file's folder.
    Every mistake of the file is reported at once (:class:`SpecErrors`), each with its line."""
    file = Path(path)
    lines: dict[str, int] = {}
    data = load_yaml_file(file, what="job file", lines=lines)
    try:
        return parse_job(data, source=str(file), base_dir=file.resolve().parent)
    except SpecError as exc:
        raise locate(exc, lines) from None


def job_spec(job: JobSpec | str | os.PathLike[str] | Mapping[str, Any]) -> JobSpec:
    """A job as the Python API takes it: a JobSpec as it is, a mapping of its fields (as in the
    YAML; relative paths from the working folder) validated, or a job file's path loaded."""
    if isinstance(job, JobSpec):
        return job
    if isinstance(job, Mapping):
        return parse_job(job, base_dir=os.getcwd())
    if not isinstance(job, str | os.PathLike):
        raise TypeError(
            f"a job is a job file's path, a mapping of its fields or a cauce.JobSpec, "
            f"not {type(job).__name__}"
        )
    return load_job(job)


def parse_job(
    data: object, *, source: str = "", base_dir: str | os.PathLike[str] | None = None
) -> JobSpec:
    """Validate a job given as a mapping (the parsed YAML); every mistake at once."""
    p = JobParser(source, collects=True)
    if not isinstance(data, Mapping):
        raise p.error("", f"must be a mapping of job fields, got {kind_of(data)}")
    p.check_keys(data, _JOB_KEYS, "", under=_ELSEWHERE)
    name = p.collect(lambda: _name(p, data, source), "job")

    # The one upward import of spec/: the framework registry owns the frameworks' names and
    # roles, and the boundary checks a job against it. Late, so that frameworks/ may import spec.
    from cauce.frameworks import FRAMEWORKS, get_framework

    def framework_of() -> str:
        framework = p.string(data.get("framework", "none"), "framework")
        if framework not in FRAMEWORKS:
            raise p.error(
                "framework", f"must be one of {', '.join(FRAMEWORKS)}, got {short_repr(framework)}"
            )
        return framework

    framework = p.collect(framework_of, "")
    command = (
        p.collect(lambda: p.command(data["command"], "command"), None)
        if "command" in data
        else None
    )
    no_env: tuple[tuple[str, str], ...] = ()
    env = p.collect(lambda: p.env(data.get("env"), "env"), no_env)
    workdir = p.collect(lambda: p.string(data.get("workdir", "."), "workdir"), ".")
    if base_dir is not None and not os.path.isabs(workdir):
        workdir = os.path.normpath(os.path.join(os.fspath(base_dir), workdir))
    restart = p.collect(lambda: p.restart(data.get("restart"), "restart"), RestartPolicy())
    timeout = p.collect(lambda: _optional_duration(p, data, "timeout"), None)
    hang = p.collect(lambda: _optional_duration(p, data, "hang_timeout"), None)
    grace = p.collect(
        lambda: p.number(data.get("grace_period", 10.0), "grace_period", minimum=0.0), 10.0
    )
    cluster = p.collect(
        lambda: p.cluster(data["cluster"]) if data.get("cluster") is not None else None, None
    )
    spark = p.collect(lambda: spark_settings(data.get("spark"), "spark", source), no_env)
    tensorboard = p.collect(
        lambda: p.tensorboard(data["tensorboard"], base_dir) if "tensorboard" in data else None,
        None,
    )
    tracking = p.collect(
        lambda: parse_tracking(data["tracking"], source) if "tracking" in data else None, None
    )
    no_modules: tuple[str, ...] = ()
    preload = p.collect(lambda: p.preload(data["preload"]) if "preload" in data else (), no_modules)
    roles: tuple[RoleSpec, ...] = ()
    if framework:  # the roles are checked against the framework's
        roles = p.collect(lambda: p.roles(data.get("roles"), get_framework(framework)), ())
    p.collect(lambda: p.gang_size(roles), None)
    if "command" not in data and not p.misspelt("command"):
        for role in roles:
            if role.command is None:
                p.errors.append(
                    p.error(
                        f"roles.{role.name}.command",
                        "is missing: give a top-level 'command' or one per role",
                    )
                )
    tune = None
    if data.get("tune") is not None:
        task_ids = [f"{role.name}-{i}" for role in roles for i in range(role.instances)]
        tune = p.collect(lambda: parse_tune(data["tune"], task_ids=task_ids, source=source), None)
    p.raise_errors()
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
        tracking=tracking,
        preload=preload,
    )


def _name(p: JobParser, data: Mapping[Any, Any], source: str) -> str:
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
    return name


def _optional_duration(p: JobParser, data: Mapping[Any, Any], key: str) -> float | None:
    value = data.get(key)
    return None if value is None else p.duration(value, key, above=0)
