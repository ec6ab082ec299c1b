"""What a Spark application's executors have: cores, GPUs, running tasks.

Read from the driver's REST API (``/api/v1/applications/<id>/executors``), the same numbers as
the Executors tab of Spark's UI; with the UI off, from the status tracker and the settings.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from cauce.errors import ClusterError

__all__ = ["Executor", "first_line", "read_executors"]


@dataclass(frozen=True)
class Executor:
    id: str
    host: str
    cores: int
    active_tasks: int
    gpus: tuple[str, ...]
    memory: int


def first_line(exc: BaseException) -> str:
    """The useful line of a py4j/Spark error (their messages carry whole Java stack traces)."""
    for line in str(exc).strip().splitlines():
        line = line.strip()
        if line and not line.startswith(("An error occurred while calling", "Traceback")):
            return line[:500]
    return type(exc).__name__


def read_executors(sc: Any, master: str) -> list[Executor]:
    """The application's live executors (the driver itself in ``local[N]`` mode)."""
    url = sc.uiWebUrl
    if not url:
        return _without_ui(sc, master)
    address = f"{url}/api/v1/applications/{sc.applicationId}/executors"
    try:
        with urllib.request.urlopen(address, timeout=10.0) as response:
            rows = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ClusterError(f"cannot read the executors of Spark at {address}: {exc}") from exc
    local = master.startswith("local")
    found = []
    for row in rows:
        if not row.get("isActive", True) or (row.get("id") == "driver") != local:
            continue
        gpu = (row.get("resources") or {}).get("gpu") or {}
        found.append(
            Executor(
                id=str(row.get("id")),
                host=str(row.get("hostPort", "")).rsplit(":", 1)[0],
                cores=int(row.get("totalCores", 0)),
                active_tasks=int(row.get("activeTasks", 0)),
                gpus=tuple(str(a) for a in gpu.get("addresses", ())),
                memory=int(row.get("maxMemory", 0)),
            )
        )
    return found


def _without_ui(sc: Any, master: str) -> list[Executor]:
    """With ``spark.ui.enabled=false``: the status tracker's executors, and their cores and
    GPUs from the settings (``spark.executor.cores``, ``spark.executor.resource.gpu.amount``).
    """
    try:
        infos = list(sc._jsc.sc().statusTracker().getExecutorInfos())
        parallelism = int(sc.defaultParallelism)
        driver = sc._jsc.sc().env().blockManager().blockManagerId()
        if not master.startswith("local"):  # the driver is listed too: not an executor there
            where = (driver.host(), driver.port())
            infos = [info for info in infos if (info.host(), info.port()) != where]
    except Exception as exc:  # py4j errors
        raise ClusterError(f"cannot read the executors of Spark: {first_line(exc)}") from exc
    if not infos:
        return []
    cores = int(sc.getConf().get("spark.executor.cores", "0")) or max(1, parallelism // len(infos))
    gpus = int(float(sc.getConf().get("spark.executor.resource.gpu.amount", "0")))
    return [
        Executor(
            id=str(i),
            host=str(info.host()),
            cores=cores,
            active_tasks=int(info.numRunningTasks()),
            gpus=tuple(str(g) for g in range(gpus)),
            memory=0,
        )
        for i, info in enumerate(infos)
    ]
