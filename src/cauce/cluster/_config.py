"""The host configuration file, ``$CAUCE_HOME/config.yaml``: what the local cluster offers.

    local:
      gpus: 0,1,2,3     # declare GPUs (overrides detection; CAUCE_GPUS overrides this)
      cpus: 8           # offer fewer CPUs than the host has
      memory: 32GiB     # likewise for memory

Read once, at the entry point, and validated like a job file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cauce._util.yamlfile import load_yaml_file
from cauce.errors import SpecError

__all__ = ["LocalConfig", "load_local_config"]

_LOCAL_KEYS = ("gpus", "cpus", "memory")


class LocalConfig:
    def __init__(
        self, gpus: str | None = None, cpus: float | None = None, memory: int | None = None
    ) -> None:
        self.gpus, self.cpus, self.memory = gpus, cpus, memory


def load_local_config(home: Path) -> LocalConfig:
    path = home / "config.yaml"
    if not path.exists():
        return LocalConfig()
    from cauce.spec import MAX_CPUS, number_problem, parse_memory

    source = str(path)
    data: Any = load_yaml_file(path, what="config file") or {}
    if not isinstance(data, dict):
        raise SpecError("", "must be a mapping with a 'local' section", source=source)
    unknown = [key for key in data if key != "local"]
    if unknown:
        raise SpecError(str(unknown[0]), "is not a known section; known: local", source=source)
    local = data.get("local") or {}
    if not isinstance(local, dict):
        raise SpecError("local", "must be a mapping of gpus, cpus, memory", source=source)
    for key in local:
        if key not in _LOCAL_KEYS:
            raise SpecError(
                f"local.{key}",
                f"is not a known field; known: {', '.join(_LOCAL_KEYS)}",
                source=source,
            )
    gpus = local.get("gpus")
    if gpus is not None:
        gpus = ",".join(str(g) for g in gpus) if isinstance(gpus, list) else str(gpus)
    cpus = local.get("cpus")
    problem = "" if cpus is None else number_problem(cpus, above=0, maximum=MAX_CPUS)
    if problem:
        raise SpecError("local.cpus", problem, source=source)
    memory = local.get("memory")
    return LocalConfig(
        gpus=gpus,
        cpus=None if cpus is None else float(cpus),
        memory=None
        if memory is None
        else parse_memory(memory, "local.memory", source, unset="to use the machine's memory"),
    )
