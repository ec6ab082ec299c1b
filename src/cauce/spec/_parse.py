"""Turn a YAML job file (or a dict) into a validated :class:`JobSpec`.

Every refusal is a :class:`SpecError` whose message names the field path, the value and the fix.
Unknown keys are refused by name, with the closest known key suggested.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from cauce._util.yamlfile import load_yaml_file
from cauce.spec._sections import JobParser
from cauce.spec._spark import spark_settings
from cauce.spec._tracking import parse_tracking
from cauce.spec._tune_parse import parse_tune
from cauce.spec._types import JobSpec
from cauce.spec._values import kind_of, short_repr

__all__ = ["load_job", "parse_job"]

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
)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def load_job(path: str | os.PathLike[str]) -> JobSpec:
    """Read and validate a job file. Relative ``workdir`` is taken from the file's folder."""
    file = Path(path)
    data = load_yaml_file(file, what="job file")
    return parse_job(data, source=str(file), base_dir=file.resolve().parent)


def parse_job(
    data: object, *, source: str = "", base_dir: str | os.PathLike[str] | None = None
) -> JobSpec:
    """Validate a job given as a mapping (the parsed YAML)."""
    p = JobParser(source)
    if not isinstance(data, Mapping):
        raise p.error("", f"must be a mapping of job fields, got {kind_of(data)}")
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
    tracking = parse_tracking(data["tracking"], source) if "tracking" in data else None

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
        tracking=tracking,
    )
