"""What a Spark application's executors have: cores, GPUs, running tasks.

Read from the driver's own status store through py4j (``SparkContext.statusStore``), the numbers
behind the Executors tab of Spark's UI and its REST API, with no HTTP round trip (the REST API
answered in more than 10 s on a loaded driver). Should that fail (another Spark version), from
the REST API (``/api/v1/applications/<id>/executors``), and last from the status tracker and the
settings. Only when every way fails is it an error.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from cauce.errors import ClusterError

__all__ = ["Executor", "first_line", "read_executors"]

logger = logging.getLogger(__name__)
_REST_TIMEOUT = 5.0


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
    local = master.startswith("local")
    try:
        return _from_status_store(sc, local)
    except Exception as exc:  # py4j errors: a Spark whose status store differs
        logger.debug("reading the executors from the status store: %s", first_line(exc))
    url = sc.uiWebUrl
    if url:
        address = f"{url}/api/v1/applications/{sc.applicationId}/executors"
        try:
            with urllib.request.urlopen(address, timeout=_REST_TIMEOUT) as response:
                return _from_rows(json.loads(response.read()), local)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection's socket
            logger.debug("reading the executors from %s: %s", address, exc)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            logger.debug("reading the executors from %s: %s", address, exc)
    return _without_ui(sc, master)


def _from_status_store(sc: Any, local: bool) -> list[Executor]:
    """From ``AppStatusStore.executorList`` (what the REST API serves), through py4j."""
    listed = sc._jsc.sc().statusStore().executorList(True)
    found = []
    for i in range(listed.size()):
        row = listed.apply(i)
        if not row.isActive() or (row.id() == "driver") != local:
            continue
        gpu = row.resources().get("gpu")
        addresses = tuple(str(a) for a in gpu.get().addresses()) if gpu.isDefined() else ()
        found.append(
            Executor(
                id=str(row.id()),
                host=str(row.hostPort()).rsplit(":", 1)[0],
                cores=int(row.totalCores()),
                active_tasks=int(row.activeTasks()),
                gpus=addresses,
                memory=int(row.maxMemory()),
            )
        )
    return found


def _from_rows(rows: list[dict[str, Any]], local: bool) -> list[Executor]:
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
    """The last resort: the status tracker's executors, and their cores and GPUs from the
    settings (``spark.executor.cores``, ``spark.executor.resource.gpu.amount``).
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
